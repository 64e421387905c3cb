//! Typed failures of the JOSE layer.
//!
//! Messages are fixed sentences or name a claim or header; they never hold a
//! token, a key, a claim value or state content, so they are safe to send to
//! the client and to log.

/// Why a request signature (`X-ManyWho-Signature`) was refused. Every case
/// means "not authenticated".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No header, or an empty one.
    #[error("X-ManyWho-Signature header is missing")]
    Missing,
    /// Not a compact JWS of the allowed shape.
    #[error("X-ManyWho-Signature is not a compact JWS: {0}")]
    Malformed(&'static str),
    /// An algorithm other than ES384.
    #[error("X-ManyWho-Signature must be signed with ES384")]
    Algorithm,
    /// The `kid` names no configured platform key.
    #[error("X-ManyWho-Signature is signed by an unknown platform key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("X-ManyWho-Signature does not verify")]
    BadSignature,
    /// A claim breaks a rule.
    #[error("X-ManyWho-Signature claim `{claim}` {problem}")]
    Claim {
        /// The claim's name.
        claim: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// Why a state token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a nested JWT of the allowed shape; the text says which part.
    #[error("state token is malformed: {0}")]
    Malformed(&'static str),
    /// `alg`, `enc`, `zip` or `cty` outside the allow-list.
    #[error("state token uses an algorithm this store does not accept: {0}")]
    Algorithm(&'static str),
    /// Encrypted to a receiver key the store does not hold.
    #[error("state token is encrypted to a receiver key this store does not hold")]
    UnknownReceiverKey,
    /// Decryption failed (wrong key, tampered ciphertext or tag, bad point).
    #[error("state token cannot be decrypted")]
    Undecryptable,
    /// The compressed plaintext inflates past the configured cap.
    #[error("state token inflates to more than {0} bytes")]
    TooLarge(u64),
    /// The inner JWS names a platform key the store does not hold.
    #[error("state token is signed by an unknown platform key")]
    UnknownPlatformKey,
    /// The inner JWS does not verify (or is not ES384).
    #[error("state token signature does not verify")]
    BadSignature,
    /// A claim breaks a rule.
    #[error("state token claim `{claim}` {problem}")]
    Claim {
        /// The claim's name.
        claim: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Building a reply token failed (a server-side fault, not the client's).
    #[error("could not build the reply token")]
    Seal,
}

impl TokenError {
    /// Whether the failure is about authenticity (401) rather than form (400).
    pub fn is_authentication_failure(&self) -> bool {
        matches!(self, Self::UnknownPlatformKey | Self::BadSignature)
    }
}
