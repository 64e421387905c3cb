//! Splitting and pre-checking compact serializations.
//!
//! Before any key is used, a token must have exactly the right number of
//! segments, strict base64url without padding, a bounded header, and a header
//! whose members are all on an allow-list (unknown members such as `crit`,
//! `jku`, `jwk`, `x5u` or `x5c` refuse the token; duplicate members too).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Largest protected header accepted, encoded. Real headers are < 1 KiB.
pub const MAX_HEADER_CHARS: usize = 4096;

/// The header members a JWS may carry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwsHeader {
    /// Algorithm.
    pub alg: String,
    /// Key id.
    pub kid: Option<String>,
    /// Media type of the whole token.
    pub typ: Option<String>,
    /// Content type.
    pub cty: Option<String>,
}

/// The ephemeral public key of an ECDH-ES JWE.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EphemeralKey {
    /// Key type.
    pub kty: String,
    /// Curve.
    pub crv: String,
    /// X coordinate.
    pub x: String,
    /// Y coordinate.
    pub y: String,
}

/// The header members a state-token JWE may carry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JweHeader {
    /// Key management algorithm.
    pub alg: String,
    /// Content encryption algorithm.
    pub enc: String,
    /// Receiver key id.
    pub kid: Option<String>,
    /// Ephemeral public key.
    pub epk: EphemeralKey,
    /// Compression.
    pub zip: Option<String>,
    /// Content type of the plaintext.
    pub cty: Option<String>,
    /// Media type of the whole token.
    pub typ: Option<String>,
    /// Agreement PartyUInfo.
    pub apu: Option<String>,
    /// Agreement PartyVInfo.
    pub apv: Option<String>,
}

/// Splits `token` into exactly `parts` dot-separated segments.
pub fn split(token: &str, parts: usize) -> Result<Vec<&str>, &'static str> {
    let segments: Vec<&str> = token.split('.').collect();
    if segments.len() != parts {
        return Err(if parts == 3 {
            "a compact JWS has exactly 3 segments"
        } else {
            "a compact JWE has exactly 5 segments"
        });
    }
    Ok(segments)
}

/// Decodes strict base64url without padding.
pub fn decode(segment: &str) -> Result<Vec<u8>, &'static str> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| "a segment is not base64url without padding")
}

/// How many bytes an unpadded base64url segment of this length decodes
/// to, or `None` where no segment can be that long (a remainder of one
/// character carries only 6 bits). Its characters are not looked at: this
/// sizes a segment that is decoded later anyway (a JWE's ciphertext, by
/// josekit), which is then the check of its alphabet.
pub fn decoded_len(segment: &str) -> Option<usize> {
    let (blocks, rest) = (segment.len() / 4, segment.len() % 4);
    let tail = match rest {
        0 => 0,
        1 => return None,
        _ => rest - 1,
    };
    Some(blocks * 3 + tail)
}

/// Decodes and parses a protected header against its allow-list.
pub fn header<T: DeserializeOwned>(segment: &str) -> Result<T, &'static str> {
    if segment.len() > MAX_HEADER_CHARS {
        return Err("the protected header is too long");
    }
    let bytes = decode(segment)?;
    serde_json::from_slice(&bytes)
        .map_err(|_| "the protected header is not a JSON object with only the allowed members")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn segment_counts() {
        assert!(split("a.b.c", 3).is_ok());
        assert!(split("a.b.c.d", 3).is_err());
        assert!(split("a.b.c.d.e.f", 5).is_err());
        assert!(split("a.b.c.d.e", 5).is_ok());
    }

    #[test]
    fn padding_and_junk_are_refused() {
        assert!(decode("YQ").is_ok());
        assert!(decode("YQ==").is_err());
        assert!(decode("Y+Q").is_err());
    }

    /// The length the base64 crate decodes to, for every length of
    /// segment up to a few blocks; `None` exactly where it refuses one.
    #[test]
    fn decoded_lengths_are_the_decoders() {
        for n in 0..64 {
            let segment = "A".repeat(n);
            let decoded = decode(&segment).map(|bytes| bytes.len()).ok();
            // "A…" has zero trailing bits, so only the length can fail it.
            assert_eq!(decoded_len(&segment), decoded, "length {n}");
        }
    }

    #[test]
    fn header_allow_list() {
        let ok = b64(r#"{"alg":"ES384","kid":"k"}"#);
        assert!(header::<JwsHeader>(&ok).is_ok());
        for bad in [
            r#"{"alg":"ES384","kid":"k","crit":["exp"]}"#,
            r#"{"alg":"ES384","kid":"k","jku":"https://evil"}"#,
            r#"{"alg":"ES384","kid":"k","jwk":{}}"#,
            r#"{"alg":"ES384","kid":"k","x5u":"https://evil"}"#,
            r#"{"alg":"ES384","kid":"k","x5c":[]}"#,
            r#"{"alg":"ES384","alg":"none","kid":"k"}"#,
            r#"{"alg":384,"kid":"k"}"#,
            r#"["alg"]"#,
        ] {
            assert!(header::<JwsHeader>(&b64(bad)).is_err(), "{bad}");
        }
        let long = b64(&format!(
            r#"{{"alg":"ES384","kid":"{}"}}"#,
            "k".repeat(1 << 20)
        ));
        assert_eq!(
            header::<JwsHeader>(&long).unwrap_err(),
            "the protected header is too long"
        );
    }
}
