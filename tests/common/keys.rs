//! Keys: P-384 JWK pairs with UUID kids, shaped like the ones the platform
//! hands out, made with josekit directly (never with the crate's `keys`).

use josekit::jwk::alg::ec::EcCurve;
use josekit::jwk::Jwk;
use serde_json::Value;

use flow_store::config::{KeySource, StoreEntry};

/// A fresh random UUID in canonical form.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A fresh P-384 private JWK with a UUID `kid`.
pub fn p384_jwk() -> Jwk {
    let pair = josekit::jws::ES384
        .generate_key_pair()
        .expect("generate P-384 key");
    let mut jwk = pair.to_jwk_key_pair();
    assert_eq!(jwk.curve(), Some(EcCurve::P384.name()));
    platform_shape(&mut jwk);
    jwk
}

/// Shape a generated JWK like the platform's: `kty`, `crv`, `kid`, `x`,
/// `y` (and `d`), no `alg` or `use`.
fn platform_shape(jwk: &mut Jwk) {
    jwk.set_key_id(uuid());
    jwk.set_parameter("alg", None).expect("remove alg");
    jwk.set_parameter("use", None).expect("remove use");
}

/// The public half of a private JWK, keeping its `kid` (josekit's own
/// `to_public_key` drops it).
pub fn public_jwk(private: &Jwk) -> Jwk {
    let mut map = private.as_ref().clone();
    map.remove("d");
    Jwk::from_map(map).expect("public JWK")
}

/// A fresh P-256 private JWK with a UUID `kid` (a curve the store must refuse).
pub fn p256_jwk() -> Jwk {
    let pair = josekit::jws::ES256
        .generate_key_pair()
        .expect("generate P-256 key");
    let mut jwk = pair.to_jwk_key_pair();
    platform_shape(&mut jwk);
    jwk
}

/// A JWK as the JSON text the platform hands out.
pub fn jwk_json(jwk: &Jwk) -> String {
    Value::Object(jwk.as_ref().clone()).to_string()
}

/// The two key pairs of one store, as the platform generates them: both
/// private halves are known to the test (the platform's for signing and
/// opening responses, the receiver's only to configure the server).
#[derive(Clone)]
pub struct StoreKeys {
    /// The platform key pair, with `d`.
    pub platform: Jwk,
    /// The receiver key pair, with `d`.
    pub receiver: Jwk,
}

impl StoreKeys {
    /// Two fresh P-384 pairs.
    pub fn generate() -> Self {
        Self {
            platform: p384_jwk(),
            receiver: p384_jwk(),
        }
    }

    pub fn platform_kid(&self) -> String {
        self.platform.key_id().expect("platform kid").to_string()
    }

    pub fn receiver_kid(&self) -> String {
        self.receiver.key_id().expect("receiver kid").to_string()
    }

    pub fn platform_public(&self) -> Jwk {
        public_jwk(&self.platform)
    }

    pub fn receiver_public(&self) -> Jwk {
        public_jwk(&self.receiver)
    }

    /// The store's view: the platform's public key, the receiver's private key.
    pub fn store_entry(&self, name: &str) -> StoreEntry {
        StoreEntry {
            name: name.to_string(),
            platform_key: KeySource::Inline(jwk_json(&self.platform_public())),
            receiver_key: KeySource::Inline(jwk_json(&self.receiver)),
        }
    }
}
