//! The key ring: every store's platform and receiver keys, found by `kid`.
//!
//! Keys are loaded and checked once (P-384 EC, a `kid`, a private part for
//! receiver keys, no duplicate kids, receiver key files not readable by other
//! users) and parsed once into the ready signers, verifiers, encrypters and
//! decrypters of [`crate::crypto::primitives`] (aws-lc-rs under josekit's
//! traits): a request never parses a configured key. Nothing here knows about HTTP. Private material never leaves
//! this module in printable form: the `Debug` impls show only the kid.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use josekit::jwk::Jwk;
use josekit::jws::ES384;

use crate::config::{KeySource, StoreEntry};
use crate::crypto::primitives::{
    EcdhEsKwDecrypter, EcdhEsKwEncrypter, Es384Signer, Es384Verifier, KeyMaterialError,
    KeyWrapAlgorithm, P384Parts,
};

/// A key that cannot be used; the message names its source and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {problem}")]
pub struct KeyError {
    /// The file (or "an inline key …") the key came from.
    pub source_name: String,
    /// What is wrong, and what to do.
    pub problem: String,
}

/// Which half of a store's key pair a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// The platform's key: the store holds its public part.
    Platform,
    /// The receiver key: the store holds its private part.
    Receiver,
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Platform => "platform key",
            Self::Receiver => "receiver key",
        })
    }
}

/// A platform public key: verifies what the platform signed, encrypts replies.
pub struct PlatformKey {
    kid: String,
    store: String,
    verifier: Es384Verifier,
    encrypter: EcdhEsKwEncrypter,
}

impl PlatformKey {
    /// The key's `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }
    /// The configured name of the store the key belongs to.
    pub fn store_name(&self) -> &str {
        &self.store
    }
    /// ES384 verifier.
    pub fn verifier(&self) -> &Es384Verifier {
        &self.verifier
    }
    /// ECDH-ES+A192KW encrypter for reply tokens.
    pub fn encrypter(&self) -> &EcdhEsKwEncrypter {
        &self.encrypter
    }
}

impl fmt::Debug for PlatformKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformKey")
            .field("kid", &self.kid)
            .finish()
    }
}

/// A receiver private key: decrypts what the platform sent, signs replies.
pub struct ReceiverKey {
    kid: String,
    store: String,
    decrypter_a192kw: EcdhEsKwDecrypter,
    decrypter_a256kw: EcdhEsKwDecrypter,
    signer: Es384Signer,
}

impl ReceiverKey {
    /// The key's `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }
    /// The configured name of the store the key belongs to.
    pub fn store_name(&self) -> &str {
        &self.store
    }
    /// ECDH-ES+A192KW decrypter.
    pub fn decrypter_a192kw(&self) -> &EcdhEsKwDecrypter {
        &self.decrypter_a192kw
    }
    /// ECDH-ES+A256KW decrypter.
    pub fn decrypter_a256kw(&self) -> &EcdhEsKwDecrypter {
        &self.decrypter_a256kw
    }
    /// ES384 signer for reply tokens.
    pub fn signer(&self) -> &Es384Signer {
        &self.signer
    }
}

impl fmt::Debug for ReceiverKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverKey")
            .field("kid", &self.kid)
            .finish()
    }
}

/// All keys of all configured stores.
#[derive(Debug, Default)]
pub struct KeyRing {
    platform: HashMap<String, PlatformKey>,
    receiver: HashMap<String, ReceiverKey>,
}

impl KeyRing {
    /// Loads and checks the keys of every store.
    pub fn load(stores: &[StoreEntry]) -> Result<KeyRing, KeyError> {
        let mut ring = KeyRing::default();
        for store in stores {
            let platform = load_key(&store.platform_key, KeyRole::Platform)?;
            let receiver = load_key(&store.receiver_key, KeyRole::Receiver)?;
            ring.add_platform(&store.name, &store.platform_key, &platform)?;
            ring.add_receiver(&store.name, &store.receiver_key, &receiver)?;
        }
        Ok(ring)
    }

    /// The platform key with this kid.
    pub fn platform(&self, kid: &str) -> Option<&PlatformKey> {
        self.platform.get(kid)
    }

    /// The receiver key with this kid.
    pub fn receiver(&self, kid: &str) -> Option<&ReceiverKey> {
        self.receiver.get(kid)
    }

    /// Every store's name with its key ids (platform, receiver), sorted;
    /// never key material.
    pub fn key_ids(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut stores = std::collections::BTreeMap::<String, Vec<String>>::new();
        let platform = self.platform.values().map(|k| (k.store_name(), k.kid()));
        let receiver = self.receiver.values().map(|k| (k.store_name(), k.kid()));
        for (store, kid) in platform.chain(receiver) {
            stores
                .entry(store.to_string())
                .or_default()
                .push(kid.to_string());
        }
        stores
    }

    /// Number of configured stores (receiver keys).
    pub fn store_count(&self) -> usize {
        self.receiver.len()
    }

    fn add_platform(
        &mut self,
        store: &str,
        source: &KeySource,
        jwk: &CheckedJwk,
    ) -> Result<(), KeyError> {
        let fail = |problem: String| key_error(source, problem);
        if self.platform.contains_key(&jwk.kid) {
            return Err(fail(format!(
                "platform key kid {} is configured twice; each store needs its own keys",
                jwk.kid
            )));
        }
        let unusable =
            |what: &str, e: KeyMaterialError| fail(format!("cannot be used as an {what} key: {e}"));
        let parts = p384_parts(&jwk.public).map_err(|e| unusable("EC", e))?;
        let verifier =
            Es384Verifier::new(&parts, &jwk.kid).map_err(|e| unusable("ES384 verification", e))?;
        let encrypter = EcdhEsKwEncrypter::new(KeyWrapAlgorithm::A192, &parts, &jwk.kid)
            .map_err(|e| unusable("ECDH-ES encryption", e))?;
        self.platform.insert(
            jwk.kid.clone(),
            PlatformKey {
                kid: jwk.kid.clone(),
                store: store.to_string(),
                verifier,
                encrypter,
            },
        );
        Ok(())
    }

    fn add_receiver(
        &mut self,
        store: &str,
        source: &KeySource,
        jwk: &CheckedJwk,
    ) -> Result<(), KeyError> {
        let fail = |problem: String| key_error(source, problem);
        if self.receiver.contains_key(&jwk.kid) {
            return Err(fail(format!(
                "receiver key kid {} is configured twice; each store needs its own keys",
                jwk.kid
            )));
        }
        let private = jwk
            .private
            .as_ref()
            .ok_or_else(|| fail("the receiver key has no private part \"d\"".into()))?;
        let unusable = |what: &str, e: KeyMaterialError| {
            fail(format!("the private key cannot be used for {what}: {e}"))
        };
        let parts = p384_parts(private).map_err(|e| unusable("EC", e))?;
        let decrypter = |alg: KeyWrapAlgorithm| {
            EcdhEsKwDecrypter::new(alg, &parts, &jwk.kid).map_err(|e| unusable(alg.name(), e))
        };
        let decrypter_a192kw = decrypter(KeyWrapAlgorithm::A192)?;
        let decrypter_a256kw = decrypter(KeyWrapAlgorithm::A256)?;
        let signer =
            Es384Signer::new(&parts, &jwk.kid).map_err(|e| unusable("ES384 signing", e))?;
        self.receiver.insert(
            jwk.kid.clone(),
            ReceiverKey {
                kid: jwk.kid.clone(),
                store: store.to_string(),
                decrypter_a192kw,
                decrypter_a256kw,
                signer,
            },
        );
        Ok(())
    }
}

/// A JWK that passed the checks, reduced to the members we use.
pub struct CheckedJwk {
    /// The key's `kid`.
    pub kid: String,
    /// kty, crv, kid, x, y.
    pub public: Jwk,
    /// The public members plus `d`, when the source had it.
    pub private: Option<Jwk>,
}

impl fmt::Debug for CheckedJwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckedJwk")
            .field("kid", &self.kid)
            .field("has_private", &self.private.is_some())
            .finish()
    }
}

/// The raw coordinates (and `d`, when present) of a checked P-384 JWK.
fn p384_parts(jwk: &Jwk) -> Result<P384Parts, KeyMaterialError> {
    let member = |name: &str| jwk.parameter(name).and_then(serde_json::Value::as_str);
    P384Parts::from_members(
        member("x").unwrap_or_default(),
        member("y").unwrap_or_default(),
        member("d"),
    )
}

fn key_error(source: &KeySource, problem: String) -> KeyError {
    KeyError {
        source_name: source.to_string(),
        problem,
    }
}

/// Reads a key from its source and checks it for `role`.
pub fn load_key(source: &KeySource, role: KeyRole) -> Result<CheckedJwk, KeyError> {
    let text = match source {
        KeySource::File(path) => {
            if role == KeyRole::Receiver {
                check_private_file(path).map_err(|p| key_error(source, p))?;
            }
            std::fs::read_to_string(path)
                .map_err(|e| key_error(source, format!("cannot read the {role} file: {e}")))?
        }
        KeySource::Inline(text) => text.clone(),
    };
    check_jwk(&text, role).map_err(|p| key_error(source, p))
}

/// Refuses a receiver key file that is not a regular file or that other
/// users can read: the receiver key is the one secret that loses the store.
#[cfg(unix)]
pub fn check_private_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)
        .and_then(|m| {
            if m.file_type().is_symlink() {
                std::fs::metadata(path)
            } else {
                Ok(m)
            }
        })
        .map_err(|e| format!("cannot read the receiver key file: {e}"))?;
    if !meta.is_file() {
        return Err("the receiver key is not a regular file".into());
    }
    if meta.permissions().mode() & 0o007 != 0 {
        return Err(format!(
            "the receiver key file is accessible to other users (mode {:o}); run `chmod 600 {}` (or 640 with the service's group)",
            meta.permissions().mode() & 0o777,
            path.display()
        ));
    }
    Ok(())
}

/// Parses a JWK and checks it is a P-384 EC key with a kid, and for a
/// receiver key, with its private part. Messages never include key material.
pub fn check_jwk(text: &str, role: KeyRole) -> Result<CheckedJwk, String> {
    let value: serde_json::Value = serde_json::from_str(text.trim()).map_err(|e| {
        format!(
            "the {role} is not a JSON object (JWK): {}",
            e.classify_name()
        )
    })?;
    let obj = value
        .as_object()
        .ok_or_else(|| format!("the {role} is not a JSON object (JWK)"))?;
    let member = |name: &str| obj.get(name).and_then(serde_json::Value::as_str);
    if member("kty") != Some("EC") {
        return Err(format!("the {role} must have \"kty\": \"EC\""));
    }
    if member("crv") != Some("P-384") {
        return Err(format!(
            "the {role} must be on curve P-384 (\"crv\": \"P-384\")"
        ));
    }
    let kid = member("kid")
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| format!("the {role} has no \"kid\""))?
        .to_string();
    let x = member("x").ok_or_else(|| format!("the {role} has no \"x\""))?;
    let y = member("y").ok_or_else(|| format!("the {role} has no \"y\""))?;
    let d = member("d");
    if role == KeyRole::Receiver && d.is_none() {
        return Err(format!(
            "the {role} (kid {kid}) has no private part \"d\": the store needs the receiver key exactly as the platform showed it"
        ));
    }
    let build = |with_d: bool| -> Result<Jwk, String> {
        let mut jwk = Jwk::new("EC");
        let mut set = |name: &str, v: &str| {
            jwk.set_parameter(name, Some(serde_json::Value::String(v.to_string())))
                .map_err(|_| format!("the {role} member \"{name}\" is invalid"))
        };
        set("crv", "P-384")?;
        set("kid", &kid)?;
        set("x", x)?;
        set("y", y)?;
        if with_d {
            if let Some(d) = d {
                set("d", d)?;
            }
        }
        Ok(jwk)
    };
    let public = build(false)?;
    // Parsing the point proves it is on P-384; a verifier cannot be built otherwise.
    ES384
        .verifier_from_jwk(&public)
        .map_err(|_| format!("the {role} (kid {kid}) is not a valid P-384 public key"))?;
    let private = match (role, d) {
        (KeyRole::Receiver, Some(_)) => {
            let jwk = build(true)?;
            ES384
                .signer_from_jwk(&jwk)
                .map_err(|_| format!("the {role} (kid {kid}) has an invalid private part"))?;
            Some(jwk)
        }
        // A platform key's private part, if given, is ignored.
        _ => None,
    };
    Ok(CheckedJwk {
        kid,
        public,
        private,
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    // serde_json's message can quote input; only say which kind of error it was.
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "unexpected end",
        }
    }
}

/// The public part of `jwk`, keeping its `kid` (josekit's own public view
/// drops it, and the kid is what the store looks keys up by).
pub fn public_jwk(jwk: &Jwk) -> Result<Jwk, josekit::JoseError> {
    let mut public = jwk.to_public_key()?;
    if let Some(kid) = jwk.key_id() {
        public.set_key_id(kid);
    }
    Ok(public)
}

/// Generates a fresh P-384 key pair as a private JWK with a random UUID kid.
pub fn generate_p384_jwk() -> Result<Jwk, josekit::JoseError> {
    let pair = ES384.generate_key_pair()?;
    let mut jwk = pair.to_jwk_key_pair();
    // Like the platform's keys: no "alg", since each key both signs and
    // agrees keys (ECDH-ES).
    jwk.set_parameter("alg", None)?;
    jwk.set_key_id(uuid::Uuid::new_v4().to_string());
    Ok(jwk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Jwk {
        generate_p384_jwk().unwrap()
    }

    fn public_of(jwk: &Jwk) -> Jwk {
        public_jwk(jwk).unwrap()
    }

    #[test]
    fn accepts_a_generated_pair() {
        let jwk = fresh();
        let checked = check_jwk(&jwk.to_string(), KeyRole::Receiver).unwrap();
        assert!(checked.private.is_some());
        let checked = check_jwk(&public_of(&jwk).to_string(), KeyRole::Platform).unwrap();
        assert!(checked.private.is_none());
    }

    #[test]
    fn receiver_needs_d() {
        let err = check_jwk(&public_of(&fresh()).to_string(), KeyRole::Receiver).unwrap_err();
        assert!(err.contains("private part"), "{err}");
    }

    #[test]
    fn other_curves_and_missing_kid_are_refused() {
        let p256 = josekit::jws::ES256
            .generate_key_pair()
            .unwrap()
            .to_jwk_key_pair();
        assert!(check_jwk(&p256.to_string(), KeyRole::Platform)
            .unwrap_err()
            .contains("P-384"));
        let mut no_kid = fresh();
        no_kid.set_parameter("kid", None).unwrap();
        assert!(check_jwk(&no_kid.to_string(), KeyRole::Platform)
            .unwrap_err()
            .contains("kid"));
        assert!(check_jwk("not json", KeyRole::Platform).is_err());
    }

    #[test]
    fn a_point_off_the_curve_is_refused() {
        let mut jwk = public_of(&fresh());
        let y = jwk.parameter("x").unwrap().clone();
        jwk.set_parameter("y", Some(y)).unwrap();
        assert!(check_jwk(&jwk.to_string(), KeyRole::Platform).is_err());
    }

    #[test]
    fn debug_never_prints_private_material() {
        let jwk = fresh();
        let d = jwk.parameter("d").unwrap().as_str().unwrap().to_string();
        let checked = check_jwk(&jwk.to_string(), KeyRole::Receiver).unwrap();
        assert!(!format!("{checked:?}").contains(&d));
        let source = KeySource::Inline(jwk.to_string());
        assert!(!format!("{source:?}").contains(&d));
    }

    #[test]
    fn world_readable_receiver_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jwk");
        std::fs::write(&path, fresh().to_string()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_key(&KeySource::File(path.clone()), KeyRole::Receiver).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        load_key(&KeySource::File(path), KeyRole::Receiver).unwrap();
    }

    #[test]
    fn duplicate_kids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = fresh();
        let r = fresh();
        let entry = StoreEntry {
            name: "a".into(),
            platform_key: KeySource::Inline(p.to_string()),
            receiver_key: KeySource::Inline(r.to_string()),
        };
        let _ = dir;
        let err = KeyRing::load(&[entry.clone(), entry]).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
