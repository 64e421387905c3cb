//! The cryptography under josekit: aws-lc-rs (AWS-LC's verified P-384) for
//! every primitive a request or a reply costs, plugged in through josekit's
//! public traits, so josekit keeps the JOSE framing (compact serialization,
//! headers, JWKs) and OpenSSL stays off the hot paths.
//!
//! - [`Es384Signer`] / [`Es384Verifier`]: ES384 (`JwsSigner`, `JwsVerifier`),
//!   signatures as the fixed 96-byte `r‖s` JOSE uses.
//! - [`EcdhEsKwDecrypter`] / [`EcdhEsKwEncrypter`]: ECDH-ES+A192KW and
//!   ECDH-ES+A256KW (`JweDecrypter`, `JweEncrypter`): P-384 agreement with
//!   the receiver's static key or a fresh ephemeral one, the Concat KDF of
//!   RFC 7518 §4.6.2, and AES key wrap (RFC 3394). aws-lc-rs wraps with
//!   128- and 256-bit keys only, so A192KW uses RustCrypto's `aes-kw`.
//! - [`AesCbcHmac`]: A192CBC-HS384 and A256CBC-HS512 (RFC 7518 §5.2,
//!   `JweContentEncryption`), the tag checked in constant time before any
//!   byte is decrypted.
//!
//! Every key is parsed once, when the key ring is built; a request parses
//! only what it brings (the ephemeral public key of a JWE).
//!
//! Nothing here is invented: each primitive is aws-lc-rs's (or `aes-kw`'s);
//! this module only arranges their inputs as the JOSE RFCs say.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use aes_kw::KeyInit;
use aws_lc_rs::agreement::{self, EphemeralPrivateKey, PrivateKey, UnparsedPublicKey, ECDH_P384};
use aws_lc_rs::cipher::{
    DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey,
    UnboundCipherKey, AES_192, AES_256,
};
use aws_lc_rs::encoding::{AsBigEndian, EcPublicKeyUncompressedBin};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::kdf::{get_sskdf_digest_algorithm, sskdf_digest, SskdfDigestAlgorithmId};
use aws_lc_rs::key_wrap::{self, AesKek, KeyWrap};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    EcdsaKeyPair, ParsedPublicKey, ECDSA_P384_SHA384_FIXED, ECDSA_P384_SHA384_FIXED_SIGNING,
};
use aws_lc_rs::{constant_time, hmac};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use josekit::jwe::{
    JweAlgorithm, JweContentEncryption, JweContext, JweDecrypter, JweEncrypter, JweHeader,
};
use josekit::jws::{JwsAlgorithm, JwsSigner, JwsVerifier};
use josekit::JoseError;
use serde_json::{Map, Value};

/// Bytes of one P-384 coordinate or scalar.
pub const P384_SCALAR_LEN: usize = 48;
/// Bytes of an ES384 signature (`r‖s`).
pub const ES384_SIGNATURE_LEN: usize = 2 * P384_SCALAR_LEN;
/// Bytes of the AES-CBC initialization vector.
const CBC_IV_LEN: usize = 16;
/// AES key wrap adds one 64-bit block.
const KEY_WRAP_OVERHEAD: usize = 8;

/// Why a key could not be turned into a primitive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyMaterialError(&'static str);

/// The raw parts of a P-384 JWK: coordinates and, for a private key, `d`.
pub struct P384Parts {
    x: Vec<u8>,
    y: Vec<u8>,
    d: Option<Vec<u8>>,
}

impl P384Parts {
    /// Decodes `x`, `y` and (when present) `d` from JWK members, each 48
    /// bytes of base64url.
    pub fn from_members(x: &str, y: &str, d: Option<&str>) -> Result<Self, KeyMaterialError> {
        let decode = |member: &str, what: &'static str| {
            URL_SAFE_NO_PAD
                .decode(member)
                .ok()
                .filter(|b| b.len() == P384_SCALAR_LEN)
                .ok_or(KeyMaterialError(what))
        };
        Ok(Self {
            x: decode(x, "x is not 48 bytes of base64url")?,
            y: decode(y, "y is not 48 bytes of base64url")?,
            d: d.map(|d| decode(d, "d is not 48 bytes of base64url"))
                .transpose()?,
        })
    }

    /// The point in X9.62 uncompressed form (`04‖x‖y`).
    fn uncompressed_point(&self) -> Vec<u8> {
        uncompressed_point(&self.x, &self.y)
    }

    fn private(&self) -> Result<&[u8], KeyMaterialError> {
        self.d
            .as_deref()
            .ok_or(KeyMaterialError("the key has no private part \"d\""))
    }
}

impl fmt::Debug for P384Parts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P384Parts")
            .field("has_private", &self.d.is_some())
            .finish()
    }
}

fn uncompressed_point(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut point = Vec::with_capacity(1 + x.len() + y.len());
    point.push(0x04);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    point
}

fn jose_error(problem: &'static str) -> JoseError {
    JoseError::InvalidJweFormat(anyhow::anyhow!(problem))
}

// ---------------------------------------------------------------- ES384 --

/// ES384 signing with a receiver private key.
#[derive(Clone)]
pub struct Es384Signer {
    // Shared, not copied: josekit's traits want clonable signers, and a
    // private key is parsed once.
    key_pair: Arc<EcdsaKeyPair>,
    kid: String,
    rng: SystemRandom,
}

impl Es384Signer {
    /// The signer for a P-384 private key; the public point must match `d`.
    pub fn new(parts: &P384Parts, kid: &str) -> Result<Self, KeyMaterialError> {
        let key_pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P384_SHA384_FIXED_SIGNING,
            parts.private()?,
            &parts.uncompressed_point(),
        )
        .map_err(|_| KeyMaterialError("d does not belong to the point (x, y) on P-384"))?;
        Ok(Self {
            key_pair: Arc::new(key_pair),
            kid: kid.to_string(),
            rng: SystemRandom::new(),
        })
    }
}

impl fmt::Debug for Es384Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Es384Signer")
            .field("kid", &self.kid)
            .finish()
    }
}

impl JwsSigner for Es384Signer {
    fn algorithm(&self) -> &dyn JwsAlgorithm {
        &josekit::jws::ES384
    }

    fn signature_len(&self) -> usize {
        ES384_SIGNATURE_LEN
    }

    fn key_id(&self) -> Option<&str> {
        Some(&self.kid)
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JoseError> {
        self.key_pair
            .sign(&self.rng, message)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| JoseError::InvalidSignature(anyhow::anyhow!("ES384 signing failed")))
    }

    fn box_clone(&self) -> Box<dyn JwsSigner> {
        Box::new(self.clone())
    }
}

/// ES384 verification with a platform public key, parsed once.
#[derive(Clone)]
pub struct Es384Verifier {
    key: ParsedPublicKey,
    kid: String,
}

impl Es384Verifier {
    /// The verifier for a point on P-384.
    pub fn new(parts: &P384Parts, kid: &str) -> Result<Self, KeyMaterialError> {
        let key = ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, parts.uncompressed_point())
            .map_err(|_| KeyMaterialError("(x, y) is not a point on P-384"))?;
        Ok(Self {
            key,
            kid: kid.to_string(),
        })
    }
}

impl fmt::Debug for Es384Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Es384Verifier")
            .field("kid", &self.kid)
            .finish()
    }
}

impl JwsVerifier for Es384Verifier {
    fn algorithm(&self) -> &dyn JwsAlgorithm {
        &josekit::jws::ES384
    }

    fn key_id(&self) -> Option<&str> {
        Some(&self.kid)
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), JoseError> {
        if signature.len() != ES384_SIGNATURE_LEN {
            return Err(JoseError::InvalidSignature(anyhow::anyhow!(
                "an ES384 signature is 96 bytes"
            )));
        }
        self.key
            .verify_sig(message, signature)
            .map_err(|_| JoseError::InvalidSignature(anyhow::anyhow!("the signature is invalid")))
    }

    fn box_clone(&self) -> Box<dyn JwsVerifier> {
        Box::new(self.clone())
    }
}

// ------------------------------------------------------- ECDH-ES + AESKW --

/// The two key-agreement algorithms the contract allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWrapAlgorithm {
    /// ECDH-ES+A192KW.
    A192,
    /// ECDH-ES+A256KW.
    A256,
}

impl KeyWrapAlgorithm {
    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Self::A192 => "ECDH-ES+A192KW",
            Self::A256 => "ECDH-ES+A256KW",
        }
    }

    fn josekit(self) -> &'static dyn JweAlgorithm {
        match self {
            Self::A192 => &josekit::jwe::ECDH_ES_A192KW,
            Self::A256 => &josekit::jwe::ECDH_ES_A256KW,
        }
    }

    fn kek_len(self) -> usize {
        match self {
            Self::A192 => 24,
            Self::A256 => 32,
        }
    }

    /// The key-encryption key: Concat KDF (RFC 7518 §4.6.2) over the shared
    /// secret, with this algorithm's name as AlgorithmID.
    fn derive_kek(
        self,
        shared_secret: &[u8],
        apu: &[u8],
        apv: &[u8],
    ) -> Result<Vec<u8>, JoseError> {
        let info = concat_kdf_info(self.name(), apu, apv, self.kek_len());
        let sha256 = get_sskdf_digest_algorithm(SskdfDigestAlgorithmId::Sha256)
            .ok_or_else(|| jose_error("Concat KDF with SHA-256 is not available"))?;
        let mut kek = vec![0u8; self.kek_len()];
        sskdf_digest(sha256, shared_secret, &info, &mut kek)
            .map_err(|_| jose_error("Concat KDF failed"))?;
        Ok(kek)
    }

    fn wrap(self, kek: &[u8], cek: &[u8]) -> Result<Vec<u8>, JoseError> {
        if cek.len() < 16 || cek.len() % 8 != 0 {
            return Err(jose_error("AES key wrap takes two or more 64-bit blocks"));
        }
        let mut out = vec![0u8; cek.len() + KEY_WRAP_OVERHEAD];
        let failed = |_| jose_error("AES key wrap failed");
        let written = match self {
            Self::A192 => aes_kw::KwAes192::new_from_slice(kek)
                .map_err(|_| jose_error("the A192KW key is not 24 bytes"))?
                .wrap_key(cek, &mut out)
                .map_err(|_| jose_error("AES key wrap failed"))?
                .len(),
            Self::A256 => AesKek::new(&key_wrap::AES_256, kek)
                .map_err(failed)?
                .wrap(cek, &mut out)
                .map_err(failed)?
                .len(),
        };
        out.truncate(written);
        Ok(out)
    }

    fn unwrap(self, kek: &[u8], wrapped: &[u8]) -> Result<Vec<u8>, JoseError> {
        let len = wrapped
            .len()
            .checked_sub(KEY_WRAP_OVERHEAD)
            // RFC 3394 wraps two or more 64-bit blocks.
            .filter(|n| *n >= 16 && n % 8 == 0)
            .ok_or_else(|| jose_error("the encrypted key has the wrong length"))?;
        let mut out = vec![0u8; len];
        let failed = |_| jose_error("the encrypted key does not unwrap");
        let written = match self {
            Self::A192 => aes_kw::KwAes192::new_from_slice(kek)
                .map_err(|_| jose_error("the A192KW key is not 24 bytes"))?
                .unwrap_key(wrapped, &mut out)
                .map_err(|_| jose_error("the encrypted key does not unwrap"))?
                .len(),
            Self::A256 => AesKek::new(&key_wrap::AES_256, kek)
                .map_err(failed)?
                .unwrap(wrapped, &mut out)
                .map_err(failed)?
                .len(),
        };
        out.truncate(written);
        Ok(out)
    }
}

/// OtherInfo of RFC 7518 §4.6.2: AlgorithmID ‖ PartyUInfo ‖ PartyVInfo,
/// each length-prefixed, ‖ SuppPubInfo (the key length in bits).
fn concat_kdf_info(alg: &str, apu: &[u8], apv: &[u8], key_len: usize) -> Vec<u8> {
    let mut info = Vec::with_capacity(16 + alg.len() + apu.len() + apv.len());
    for part in [alg.as_bytes(), apu, apv] {
        info.extend_from_slice(&(part.len() as u32).to_be_bytes());
        info.extend_from_slice(part);
    }
    info.extend_from_slice(&((key_len * 8) as u32).to_be_bytes());
    info
}

/// `apu` or `apv` of a header: absent is empty.
fn party_info(header: &JweHeader, name: &str) -> Result<Vec<u8>, JoseError> {
    match header.claim(name) {
        None => Ok(Vec::new()),
        Some(Value::String(b64)) => URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| jose_error("apu or apv is not base64url")),
        Some(_) => Err(jose_error("apu or apv is not a string")),
    }
}

/// The `epk` of a header as an X9.62 point, checked to be on P-384 (by
/// aws-lc-rs, when the agreement parses it).
fn ephemeral_point(header: &JweHeader) -> Result<Vec<u8>, JoseError> {
    let epk = match header.claim("epk") {
        Some(Value::Object(map)) => map,
        _ => return Err(jose_error("the epk header is missing or not an object")),
    };
    let member = |name: &str| match epk.get(name) {
        Some(Value::String(s)) => Ok(s.as_str()),
        _ => Err(jose_error("an epk member is missing or not a string")),
    };
    if member("kty")? != "EC" || member("crv")? != "P-384" {
        return Err(jose_error("the epk is not an EC key on P-384"));
    }
    let parts = P384Parts::from_members(member("x")?, member("y")?, None)
        .map_err(|_| jose_error("the epk coordinates are not 48 bytes each"))?;
    Ok(parts.uncompressed_point())
}

/// Unwraps the content key of a JWE sent to a receiver key.
#[derive(Clone)]
pub struct EcdhEsKwDecrypter {
    algorithm: KeyWrapAlgorithm,
    private: Arc<PrivateKey>,
    kid: String,
}

impl EcdhEsKwDecrypter {
    /// The decrypter for `algorithm` with a P-384 private key.
    pub fn new(
        algorithm: KeyWrapAlgorithm,
        parts: &P384Parts,
        kid: &str,
    ) -> Result<Self, KeyMaterialError> {
        let private = PrivateKey::from_private_key(&ECDH_P384, parts.private()?)
            .map_err(|_| KeyMaterialError("d is not a P-384 private key"))?;
        let public = private
            .compute_public_key()
            .map_err(|_| KeyMaterialError("d is not a P-384 private key"))?;
        if public.as_ref() != parts.uncompressed_point().as_slice() {
            return Err(KeyMaterialError(
                "d does not belong to the point (x, y) on P-384",
            ));
        }
        Ok(Self {
            algorithm,
            private: Arc::new(private),
            kid: kid.to_string(),
        })
    }
}

impl fmt::Debug for EcdhEsKwDecrypter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcdhEsKwDecrypter")
            .field("alg", &self.algorithm.name())
            .field("kid", &self.kid)
            .finish()
    }
}

impl JweDecrypter for EcdhEsKwDecrypter {
    fn algorithm(&self) -> &dyn JweAlgorithm {
        self.algorithm.josekit()
    }

    fn key_id(&self) -> Option<&str> {
        Some(&self.kid)
    }

    fn decrypt(
        &self,
        encrypted_key: Option<&[u8]>,
        cencryption: &dyn JweContentEncryption,
        header: &JweHeader,
    ) -> Result<Cow<'_, [u8]>, JoseError> {
        let wrapped = encrypted_key.ok_or_else(|| jose_error("the encrypted key is missing"))?;
        let point = ephemeral_point(header)?;
        let apu = party_info(header, "apu")?;
        let apv = party_info(header, "apv")?;
        let kek = agreement::agree(
            &self.private,
            UnparsedPublicKey::new(&ECDH_P384, &point),
            jose_error("the epk is not a point on P-384"),
            |secret| self.algorithm.derive_kek(secret, &apu, &apv),
        )?;
        let cek = self.algorithm.unwrap(&kek, wrapped)?;
        if cek.len() != cencryption.key_len() {
            return Err(jose_error("the content key has the wrong length"));
        }
        Ok(Cow::Owned(cek))
    }

    fn box_clone(&self) -> Box<dyn JweDecrypter> {
        Box::new(self.clone())
    }
}

/// Wraps a fresh content key to a platform public key, with a fresh
/// ephemeral P-384 key per token.
#[derive(Clone)]
pub struct EcdhEsKwEncrypter {
    algorithm: KeyWrapAlgorithm,
    peer: agreement::ParsedPublicKey,
    kid: String,
    rng: SystemRandom,
}

impl EcdhEsKwEncrypter {
    /// The encrypter for `algorithm` to a point on P-384.
    pub fn new(
        algorithm: KeyWrapAlgorithm,
        parts: &P384Parts,
        kid: &str,
    ) -> Result<Self, KeyMaterialError> {
        let peer = agreement::ParsedPublicKey::try_from(UnparsedPublicKey::new(
            &ECDH_P384,
            parts.uncompressed_point(),
        ))
        .map_err(|_| KeyMaterialError("(x, y) is not a point on P-384"))?;
        Ok(Self {
            algorithm,
            peer,
            kid: kid.to_string(),
            rng: SystemRandom::new(),
        })
    }

    /// The `epk` header member for an ephemeral public key.
    fn epk_member(ephemeral: &EphemeralPrivateKey) -> Result<Value, JoseError> {
        let public = ephemeral
            .compute_public_key()
            .map_err(|_| jose_error("no ephemeral public key"))?;
        let point: EcPublicKeyUncompressedBin<'_> = public
            .as_be_bytes()
            .map_err(|_| jose_error("no ephemeral public key"))?;
        let bytes = point.as_ref();
        if bytes.len() != 1 + 2 * P384_SCALAR_LEN {
            return Err(jose_error("the ephemeral public key is not on P-384"));
        }
        let (x, y) = bytes[1..].split_at(P384_SCALAR_LEN);
        let mut epk = Map::new();
        epk.insert("kty".into(), Value::String("EC".into()));
        epk.insert("crv".into(), Value::String("P-384".into()));
        epk.insert("x".into(), Value::String(URL_SAFE_NO_PAD.encode(x)));
        epk.insert("y".into(), Value::String(URL_SAFE_NO_PAD.encode(y)));
        Ok(Value::Object(epk))
    }
}

impl fmt::Debug for EcdhEsKwEncrypter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcdhEsKwEncrypter")
            .field("alg", &self.algorithm.name())
            .field("kid", &self.kid)
            .finish()
    }
}

impl JweEncrypter for EcdhEsKwEncrypter {
    fn algorithm(&self) -> &dyn JweAlgorithm {
        self.algorithm.josekit()
    }

    fn key_id(&self) -> Option<&str> {
        Some(&self.kid)
    }

    fn compute_content_encryption_key(
        &self,
        cencryption: &dyn JweContentEncryption,
        _in_header: &JweHeader,
        _out_header: &mut JweHeader,
    ) -> Result<Option<Cow<'_, [u8]>>, JoseError> {
        let mut cek = vec![0u8; cencryption.key_len()];
        self.rng
            .fill(&mut cek)
            .map_err(|_| jose_error("no random content key"))?;
        Ok(Some(Cow::Owned(cek)))
    }

    fn encrypt(
        &self,
        key: &[u8],
        in_header: &JweHeader,
        out_header: &mut JweHeader,
    ) -> Result<Option<Vec<u8>>, JoseError> {
        let apu = party_info(in_header, "apu")?;
        let apv = party_info(in_header, "apv")?;
        let ephemeral = EphemeralPrivateKey::generate(&ECDH_P384, &self.rng)
            .map_err(|_| jose_error("no ephemeral key"))?;
        out_header.set_claim("epk", Some(Self::epk_member(&ephemeral)?))?;
        let kek = agreement::agree_ephemeral(
            ephemeral,
            self.peer.clone(),
            jose_error("the key agreement failed"),
            |secret| self.algorithm.derive_kek(secret, &apu, &apv),
        )?;
        self.algorithm.wrap(&kek, key).map(Some)
    }

    fn box_clone(&self) -> Box<dyn JweEncrypter> {
        Box::new(self.clone())
    }
}

// ------------------------------------------------- AES-CBC + HMAC-SHA-2 --

/// josekit's JWE framing with exactly the content encryptions the contract
/// allows, on aws-lc-rs ([`AesCbcHmac`]); josekit registers more, on OpenSSL.
pub fn contract_jwe_context() -> JweContext {
    let mut jwe = JweContext::new();
    for enc in [
        "A128CBC-HS256",
        "A192CBC-HS384",
        "A256CBC-HS512",
        "A128GCM",
        "A192GCM",
        "A256GCM",
    ] {
        jwe.remove_content_encryption(enc);
    }
    for enc in AesCbcHmac::ALL {
        jwe.add_content_encryption(Box::new(enc));
    }
    jwe
}

/// A192CBC-HS384 or A256CBC-HS512 (RFC 7518 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AesCbcHmac {
    /// AES-192-CBC with HMAC-SHA-384, tag 24 bytes.
    A192CbcHs384,
    /// AES-256-CBC with HMAC-SHA-512, tag 32 bytes.
    A256CbcHs512,
}

impl AesCbcHmac {
    /// Both, for registering with a josekit context.
    pub const ALL: [AesCbcHmac; 2] = [AesCbcHmac::A192CbcHs384, AesCbcHmac::A256CbcHs512];

    /// Bytes of each half of the key (MAC key, then encryption key), and of
    /// the tag.
    fn half(self) -> usize {
        match self {
            Self::A192CbcHs384 => 24,
            Self::A256CbcHs512 => 32,
        }
    }

    fn cipher(self) -> &'static aws_lc_rs::cipher::Algorithm {
        match self {
            Self::A192CbcHs384 => &AES_192,
            Self::A256CbcHs512 => &AES_256,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Self::A192CbcHs384 => hmac::HMAC_SHA384,
            Self::A256CbcHs512 => hmac::HMAC_SHA512,
        }
    }

    /// Splits the content key into MAC key and encryption key.
    fn split_key(self, key: &[u8]) -> Result<(&[u8], &[u8]), JoseError> {
        if key.len() != 2 * self.half() {
            return Err(jose_error("the content key has the wrong length"));
        }
        Ok(key.split_at(self.half()))
    }

    /// The truncated HMAC over AAD ‖ IV ‖ ciphertext ‖ AL.
    fn tag(self, mac_key: &[u8], aad: &[u8], iv: &[u8], ciphertext: &[u8]) -> Vec<u8> {
        let mut context = hmac::Context::with_key(&hmac::Key::new(self.hmac(), mac_key));
        context.update(aad);
        context.update(iv);
        context.update(ciphertext);
        context.update(&((aad.len() as u64) * 8).to_be_bytes());
        context.sign().as_ref()[..self.half()].to_vec()
    }

    fn iv(iv: Option<&[u8]>) -> Result<[u8; CBC_IV_LEN], JoseError> {
        iv.and_then(|iv| <[u8; CBC_IV_LEN]>::try_from(iv).ok())
            .ok_or_else(|| jose_error("the initialization vector is not 16 bytes"))
    }
}

impl JweContentEncryption for AesCbcHmac {
    fn name(&self) -> &str {
        match self {
            Self::A192CbcHs384 => "A192CBC-HS384",
            Self::A256CbcHs512 => "A256CBC-HS512",
        }
    }

    fn key_len(&self) -> usize {
        2 * self.half()
    }

    fn iv_len(&self) -> usize {
        CBC_IV_LEN
    }

    fn encrypt(
        &self,
        key: &[u8],
        iv: Option<&[u8]>,
        message: &[u8],
        aad: &[u8],
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), JoseError> {
        let (mac_key, enc_key) = self.split_key(key)?;
        let iv = Self::iv(iv)?;
        let failed = |_| jose_error("AES-CBC encryption failed");
        let cipher = UnboundCipherKey::new(self.cipher(), enc_key).map_err(failed)?;
        let mut ciphertext = message.to_vec();
        PaddedBlockEncryptingKey::cbc_pkcs7(cipher)
            .map_err(failed)?
            .less_safe_encrypt(
                &mut ciphertext,
                EncryptionContext::Iv128(FixedLength::from(iv)),
            )
            .map_err(failed)?;
        let tag = self.tag(mac_key, aad, &iv, &ciphertext);
        Ok((ciphertext, Some(tag)))
    }

    fn decrypt(
        &self,
        key: &[u8],
        iv: Option<&[u8]>,
        encrypted_message: &[u8],
        aad: &[u8],
        tag: Option<&[u8]>,
    ) -> Result<Vec<u8>, JoseError> {
        let (mac_key, enc_key) = self.split_key(key)?;
        let iv = Self::iv(iv)?;
        let tag = tag.ok_or_else(|| jose_error("the authentication tag is missing"))?;
        let expected = self.tag(mac_key, aad, &iv, encrypted_message);
        constant_time::verify_slices_are_equal(&expected, tag)
            .map_err(|_| jose_error("the authentication tag does not verify"))?;
        let failed = |_| jose_error("AES-CBC decryption failed");
        let cipher = UnboundCipherKey::new(self.cipher(), enc_key).map_err(failed)?;
        let mut buffer = encrypted_message.to_vec();
        let plaintext_len = PaddedBlockDecryptingKey::cbc_pkcs7(cipher)
            .map_err(failed)?
            .decrypt(&mut buffer, DecryptionContext::Iv128(FixedLength::from(iv)))
            .map_err(failed)?
            .len();
        buffer.truncate(plaintext_len);
        Ok(buffer)
    }

    fn box_clone(&self) -> Box<dyn JweContentEncryption> {
        Box::new(*self)
    }
}

/// Known answers (RFC 3394, RFC 7518, Project Wycheproof) for each
/// primitive, and a differential test against plain josekit on OpenSSL at
/// the level of whole tokens.
#[cfg(test)]
mod tests {
    use super::*;
    use josekit::jwk::Jwk;
    use wycheproof::TestResult;

    fn hex(text: &str) -> Vec<u8> {
        let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn key_wrap_matches_rfc_3394() {
        let kek192 = hex("000102030405060708090A0B0C0D0E0F1011121314151617");
        let kek256 = hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
        let key128 = hex("00112233445566778899AABBCCDDEEFF");
        let key192 = hex("00112233445566778899AABBCCDDEEFF0001020304050607");
        let key256 = hex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F");
        // §4.2, §4.4 (192-bit KEK); §4.3, §4.5, §4.6 (256-bit KEK).
        let cases = [
            (
                KeyWrapAlgorithm::A192,
                &kek192,
                &key128,
                "96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D",
            ),
            (
                KeyWrapAlgorithm::A192,
                &kek192,
                &key192,
                "031D33264E15D33268F24EC260743EDCE1C6C7DDEE725A936BA814915C6762D2",
            ),
            (
                KeyWrapAlgorithm::A256,
                &kek256,
                &key128,
                "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7",
            ),
            (
                KeyWrapAlgorithm::A256,
                &kek256,
                &key192,
                "A8F9BC1612C68B3FF6E6F4FBE30E71E4769C8B80A32CB8958CD5D17D6B254DA1",
            ),
            (
                KeyWrapAlgorithm::A256,
                &kek256,
                &key256,
                "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21",
            ),
        ];
        for (alg, kek, key, wrapped) in cases {
            let wrapped = hex(wrapped);
            assert_eq!(&alg.wrap(kek, key).unwrap(), &wrapped, "{alg:?} wrap");
            assert_eq!(&alg.unwrap(kek, &wrapped).unwrap(), key, "{alg:?} unwrap");
            let mut tampered = wrapped.clone();
            tampered[3] ^= 1;
            assert!(alg.unwrap(kek, &tampered).is_err(), "{alg:?} tampered");
        }
    }

    #[test]
    fn key_wrap_passes_wycheproof() {
        let set =
            wycheproof::keywrap::TestSet::load(wycheproof::keywrap::TestName::AesKeyWrap).unwrap();
        let mut checked = 0;
        for group in &set.test_groups {
            let alg = match group.key_size {
                192 => KeyWrapAlgorithm::A192,
                256 => KeyWrapAlgorithm::A256,
                _ => continue,
            };
            for test in &group.tests {
                let unwrapped = alg.unwrap(&test.key, &test.ct);
                match test.result {
                    TestResult::Valid => {
                        assert_eq!(unwrapped.unwrap(), *test.pt, "tc {}", test.tc_id);
                        assert_eq!(alg.wrap(&test.key, &test.pt).unwrap(), *test.ct);
                    }
                    TestResult::Invalid => {
                        assert!(unwrapped.is_err(), "tc {} unwrapped", test.tc_id)
                    }
                    TestResult::Acceptable => {}
                }
                checked += 1;
            }
        }
        assert!(checked > 50, "only {checked} vectors");
    }

    #[test]
    fn aes_cbc_hmac_passes_wycheproof_and_rfc_7518() {
        use wycheproof::aead::{TestName, TestSet};
        for (enc, name) in [
            (AesCbcHmac::A192CbcHs384, TestName::Aes192CbcHmacSha384),
            (AesCbcHmac::A256CbcHs512, TestName::Aes256CbcHmacSha512),
        ] {
            let set = TestSet::load(name).unwrap();
            let mut known_answers = 0;
            for test in set.test_groups.iter().flat_map(|g| &g.tests) {
                let opened = enc.decrypt(
                    &test.key,
                    Some(&test.nonce),
                    &test.ct,
                    &test.aad,
                    Some(&test.tag),
                );
                match test.result {
                    TestResult::Valid => {
                        assert_eq!(opened.unwrap(), *test.pt, "{enc:?} tc {}", test.tc_id);
                        let (ct, tag) = enc
                            .encrypt(&test.key, Some(&test.nonce), &test.pt, &test.aad)
                            .unwrap();
                        assert_eq!((ct, tag.unwrap()), (test.ct.to_vec(), test.tag.to_vec()));
                        if test
                            .flags
                            .contains(&wycheproof::aead::TestFlag::KnownTestVector)
                        {
                            known_answers += 1;
                        }
                    }
                    TestResult::Invalid => {
                        assert!(opened.is_err(), "{enc:?} tc {} opened", test.tc_id)
                    }
                    TestResult::Acceptable => {}
                }
            }
            assert!(
                known_answers >= 1,
                "{enc:?}: RFC 7518's vector is not in the set"
            );
        }
    }

    #[test]
    fn es384_verification_passes_wycheproof() {
        use wycheproof::ecdsa::{TestName, TestSet};
        let set = TestSet::load(TestName::EcdsaSecp384r1Sha384P1363).unwrap();
        for group in &set.test_groups {
            let point = &group.key.key;
            let parts = P384Parts::from_members(
                &URL_SAFE_NO_PAD.encode(&point[1..49]),
                &URL_SAFE_NO_PAD.encode(&point[49..]),
                None,
            )
            .unwrap();
            let verifier = Es384Verifier::new(&parts, "k").unwrap();
            for test in &group.tests {
                let verified = verifier.verify(&test.msg, &test.sig);
                match test.result {
                    TestResult::Valid => verified.unwrap(),
                    TestResult::Invalid => assert!(verified.is_err(), "tc {} verified", test.tc_id),
                    TestResult::Acceptable => {}
                }
            }
        }
    }

    #[test]
    fn concat_kdf_matches_rfc_7518_appendix_c() {
        let z = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
            110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let info = concat_kdf_info("A128GCM", b"Alice", b"Bob", 16);
        let sha256 = get_sskdf_digest_algorithm(SskdfDigestAlgorithmId::Sha256).unwrap();
        let mut key = [0u8; 16];
        sskdf_digest(sha256, &z, &info, &mut key).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.encode(key), "VqqN6vgjbSBcIijNcacQGg");
    }

    #[test]
    fn a_private_key_that_does_not_match_its_point_is_refused() {
        let a = crate::keys::generate_p384_jwk().unwrap();
        let b = crate::keys::generate_p384_jwk().unwrap();
        let member =
            |jwk: &Jwk, name: &str| jwk.parameter(name).unwrap().as_str().unwrap().to_string();
        let mixed =
            P384Parts::from_members(&member(&a, "x"), &member(&a, "y"), Some(&member(&b, "d")))
                .unwrap();
        assert!(Es384Signer::new(&mixed, "k").is_err());
        assert!(EcdhEsKwDecrypter::new(KeyWrapAlgorithm::A192, &mixed, "k").is_err());
    }

    /// A receiver key pair, as this module and as plain josekit use it.
    struct Pair {
        jwk: Jwk,
        parts: P384Parts,
    }

    fn pair() -> Pair {
        let jwk = crate::keys::generate_p384_jwk().unwrap();
        let member = |name: &str| jwk.parameter(name).unwrap().as_str().unwrap().to_string();
        let parts =
            P384Parts::from_members(&member("x"), &member("y"), Some(&member("d"))).unwrap();
        Pair { jwk, parts }
    }

    fn random_content(rng: &SystemRandom) -> Vec<u8> {
        let mut len = [0u8; 2];
        rng.fill(&mut len).unwrap();
        let mut content = vec![0u8; usize::from(u16::from_be_bytes(len)) % 3000];
        rng.fill(&mut content).unwrap();
        // Half of them compressible, as JSON states are.
        if len[0] % 2 == 0 {
            content
                .iter_mut()
                .for_each(|b| *b = b"{}\"ab:, "[usize::from(*b) % 8]);
        }
        content
    }

    /// Tokens sealed here open with plain josekit (OpenSSL), and tokens
    /// sealed by plain josekit open here, for every alg/enc/zip combination
    /// the contract allows, over random contents (2 048 tokens in all).
    #[test]
    fn tokens_interoperate_with_plain_josekit_both_ways() {
        const PER_COMBINATION: usize = 128;
        let rng = SystemRandom::new();
        let receiver = pair();
        let public = crate::keys::public_jwk(&receiver.jwk).unwrap();
        let kid = receiver.jwk.key_id().unwrap();
        let ours = contract_jwe_context();
        let plain = JweContext::new();
        for alg in [KeyWrapAlgorithm::A192, KeyWrapAlgorithm::A256] {
            let (plain_alg, plain_name) = match alg {
                KeyWrapAlgorithm::A192 => (josekit::jwe::ECDH_ES_A192KW, "A192"),
                KeyWrapAlgorithm::A256 => (josekit::jwe::ECDH_ES_A256KW, "A256"),
            };
            let our_encrypter = EcdhEsKwEncrypter::new(alg, &receiver.parts, kid).unwrap();
            let our_decrypter = EcdhEsKwDecrypter::new(alg, &receiver.parts, kid).unwrap();
            let plain_encrypter = plain_alg.encrypter_from_jwk(&public).unwrap();
            let plain_decrypter = plain_alg.decrypter_from_jwk(&receiver.jwk).unwrap();
            for enc in AesCbcHmac::ALL {
                for zip in [false, true] {
                    let mut header = JweHeader::new();
                    header.set_content_encryption(enc.name());
                    if zip {
                        header.set_compression("DEF");
                    }
                    for _ in 0..PER_COMBINATION {
                        let content = random_content(&rng);
                        let label = format!(
                            "{plain_name} {} zip={zip} len={}",
                            enc.name(),
                            content.len()
                        );
                        let token = ours
                            .serialize_compact(&content, &header, &our_encrypter)
                            .unwrap();
                        let (opened, _) = plain
                            .deserialize_compact(&token, &plain_decrypter)
                            .expect(&label);
                        assert_eq!(opened, content, "ours -> josekit: {label}");
                        let token = plain
                            .serialize_compact(&content, &header, &plain_encrypter)
                            .unwrap();
                        let (opened, _) = ours
                            .deserialize_compact(&token, &our_decrypter)
                            .expect(&label);
                        assert_eq!(opened, content, "josekit -> ours: {label}");
                    }
                }
            }
        }
    }

    #[test]
    fn es384_interoperates_with_plain_josekit_both_ways() {
        let rng = SystemRandom::new();
        let key = pair();
        let public = crate::keys::public_jwk(&key.jwk).unwrap();
        let signer = Es384Signer::new(&key.parts, "k").unwrap();
        let verifier = Es384Verifier::new(&key.parts, "k").unwrap();
        let plain_signer = josekit::jws::ES384.signer_from_jwk(&key.jwk).unwrap();
        let plain_verifier = josekit::jws::ES384.verifier_from_jwk(&public).unwrap();
        for _ in 0..256 {
            let message = random_content(&rng);
            let ours = signer.sign(&message).unwrap();
            assert_eq!(ours.len(), ES384_SIGNATURE_LEN);
            plain_verifier.verify(&message, &ours).unwrap();
            verifier
                .verify(&message, &plain_signer.sign(&message).unwrap())
                .unwrap();
            let mut tampered = ours.clone();
            tampered[10] ^= 0x40;
            assert!(verifier.verify(&message, &tampered).is_err());
        }
    }

    #[test]
    fn a_jwe_with_a_tampered_tag_or_ciphertext_is_refused() {
        let receiver = pair();
        let ours = contract_jwe_context();
        let encrypter =
            EcdhEsKwEncrypter::new(KeyWrapAlgorithm::A192, &receiver.parts, "k").unwrap();
        let decrypter =
            EcdhEsKwDecrypter::new(KeyWrapAlgorithm::A192, &receiver.parts, "k").unwrap();
        let mut header = JweHeader::new();
        header.set_content_encryption("A192CBC-HS384");
        let token = ours
            .serialize_compact(b"{\"a\":1}", &header, &encrypter)
            .unwrap();
        for segment in [1, 2, 3, 4] {
            let mut parts: Vec<Vec<u8>> = token
                .split('.')
                .map(|p| URL_SAFE_NO_PAD.decode(p).unwrap())
                .collect();
            parts[segment][0] ^= 1;
            let tampered: Vec<String> = parts.iter().map(|p| URL_SAFE_NO_PAD.encode(p)).collect();
            assert!(
                ours.deserialize_compact(tampered.join("."), &decrypter)
                    .is_err(),
                "segment {segment}"
            );
        }
    }
}
