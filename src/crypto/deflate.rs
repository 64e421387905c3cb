//! DEFLATE for the `zip: DEF` of state tokens (RFC 1951, raw, no zlib
//! header): inflation refused past a cap, so a small token cannot expand
//! into gigabytes (a "zip bomb"), and compression at level 1 for replies.
//!
//! A large reply is compressed only where that pays ([`worth_compressing`]):
//! a state that holds already-compressed or random data (a file, an image,
//! ciphertext) comes out of level 1 hardly smaller, after the costliest
//! step of its load (on 256 KiB of such text, nearly half of a load's CPU;
//! docs/performance.md). The contract lets a reply go uncompressed.
//!
//! Each thread keeps one compressor and resets it per reply. A fresh
//! zlib-rs compressor allocates and clears about 256 KiB (window, hash
//! chains, pending buffer) for what is, in a 1 KiB reply, a few kilobytes
//! of work: reusing it took 14.8 µs to 10.3 µs for a 1 KiB reply, in
//! process (docs/performance.md). Inflation keeps flate2's reader, whose
//! per-token state is small, and which has always handled hostile input,
//! reading the token's bytes in place.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read};

use flate2::{Compress, Compression, FlushCompress, Status};
use josekit::jwe::JweCompression;

/// Raw DEFLATE for josekit's JWE framing, inflating at most `limit` bytes.
#[derive(Debug, Clone)]
pub struct CappedDeflate {
    limit: u64,
}

impl CappedDeflate {
    /// DEFLATE that refuses plaintexts longer than `limit` bytes once
    /// inflated (0: refuse to inflate anything).
    pub fn new(limit: u64) -> Self {
        Self { limit }
    }
}

/// The error inside the `io::Error` an over-long inflation returns.
#[derive(Debug)]
pub struct InflationCapExceeded;

impl fmt::Display for InflationCapExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("inflated plaintext exceeds the cap")
    }
}

impl std::error::Error for InflationCapExceeded {}

thread_local! {
    // Level 1, not josekit's default 6: on a 256 KiB reply, level 6 took
    // over half of the server's time (profile in docs/performance.md), and
    // state JSON compresses nearly as well at level 1.
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
}

/// Replies up to this long are always compressed; of longer ones, this
/// much of the start is compressed first, as a sample.
const SAMPLE_BYTES: usize = 16 * 1024;

/// Whether compressing `message` (a reply's JWS) pays: always for a short
/// one (a sample would cost as much as the whole); for a long one, when
/// the first [`SAMPLE_BYTES`] shrink by at least a tenth at the reply's
/// level. What a sample gets wrong costs bandwidth or CPU, never
/// correctness: both forms are valid replies.
pub fn worth_compressing(message: &[u8]) -> bool {
    if message.len() <= SAMPLE_BYTES {
        return true;
    }
    let sample = &message[..SAMPLE_BYTES];
    // Compressing into memory does not fail; if it did, the reply would
    // go uncompressed, valid either way.
    COMPRESSOR.with_borrow_mut(|compressor| {
        deflate(compressor, sample).is_ok_and(|out| out.len() * 10 <= sample.len() * 9)
    })
}

impl JweCompression for CappedDeflate {
    fn name(&self) -> &str {
        "DEF"
    }

    fn compress(&self, message: &[u8]) -> Result<Vec<u8>, io::Error> {
        COMPRESSOR.with_borrow_mut(|compressor| deflate(compressor, message))
    }

    fn decompress(&self, data: &[u8]) -> Result<Vec<u8>, io::Error> {
        let mut out = Vec::new();
        // The buffered reader over the slice itself: `read::DeflateDecoder`
        // would first copy it through a fresh, zeroed 32 KiB buffer.
        // One byte over the cap is enough to know it is exceeded.
        flate2::bufread::DeflateDecoder::new(data)
            .take(self.limit.saturating_add(1))
            .read_to_end(&mut out)?;
        if out.len() as u64 > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                InflationCapExceeded,
            ));
        }
        Ok(out)
    }

    fn box_clone(&self) -> Box<dyn JweCompression> {
        Box::new(self.clone())
    }
}

/// `message` compressed to one complete raw DEFLATE stream.
fn deflate(compressor: &mut Compress, message: &[u8]) -> io::Result<Vec<u8>> {
    // Also after an error part way through the last message.
    compressor.reset();
    let mut out = Vec::with_capacity(message.len() / 2 + 64);
    loop {
        let consumed = usize::try_from(compressor.total_in()).unwrap_or(usize::MAX);
        let status = compressor
            .compress_vec(&message[consumed..], &mut out, FlushCompress::Finish)
            .map_err(io::Error::other)?;
        if status == Status::StreamEnd {
            return Ok(out);
        }
        // Finish only stops short of the end when `out` is full.
        out.reserve(out.capacity());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn reference_deflate(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn reference_inflate(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// Text that compresses somewhat, different for every `seed`.
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                b"{}\":, abcdefgh0123"[(state >> 59) as usize % 18]
            })
            .collect()
    }

    fn is_cap_error(error: &io::Error) -> bool {
        error
            .get_ref()
            .is_some_and(|inner| inner.is::<InflationCapExceeded>())
    }

    #[test]
    fn a_reused_compressor_round_trips_every_size_through_a_plain_inflater() {
        let codec = CappedDeflate::new(1 << 22);
        // Reuse across sizes, small after large included, is the point.
        for (seed, len) in [0usize, 1, 17, 1024, 300_000, 5, 70_000, 0]
            .into_iter()
            .enumerate()
        {
            let data = sample(len, seed as u64);
            let compressed = codec.compress(&data).unwrap();
            assert_eq!(reference_inflate(&compressed), data, "length {len}");
        }
    }

    #[test]
    fn inflation_opens_what_another_deflater_made() {
        let codec = CappedDeflate::new(1 << 22);
        for (seed, len) in [1024usize, 0, 262_144, 3, 1024].into_iter().enumerate() {
            let data = sample(len, 100 + seed as u64);
            let opened = codec.decompress(&reference_deflate(&data)).unwrap();
            assert_eq!(opened, data, "length {len}");
        }
    }

    #[test]
    fn the_cap_is_exact() {
        let data = vec![b'a'; 10_000];
        let compressed = reference_deflate(&data);
        assert_eq!(
            CappedDeflate::new(10_000).decompress(&compressed).unwrap(),
            data
        );
        let refused = CappedDeflate::new(9_999)
            .decompress(&compressed)
            .unwrap_err();
        assert!(is_cap_error(&refused), "{refused}");
        let refused = CappedDeflate::new(0).decompress(&compressed).unwrap_err();
        assert!(is_cap_error(&refused), "{refused}");
    }

    #[test]
    fn a_bomb_is_refused_at_the_cap() {
        // 1 GiB of zeros in about 1 MiB of DEFLATE.
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            encoder.write_all(&zeros).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        let refused = CappedDeflate::new(1 << 20).decompress(&bomb).unwrap_err();
        assert!(is_cap_error(&refused), "{refused}");
    }

    #[test]
    fn a_cut_stream_and_garbage_are_errors_and_the_next_token_still_opens() {
        let data = sample(50_000, 7);
        let compressed = reference_deflate(&data);
        let codec = CappedDeflate::new(1 << 20);
        let cut = codec
            .decompress(&compressed[..compressed.len() / 2])
            .unwrap_err();
        assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof);
        // A reserved block type (BTYPE = 11) is invalid DEFLATE.
        let refused = codec.decompress(&[0x07, 0x00, 0x00]).unwrap_err();
        assert!(!is_cap_error(&refused), "{refused}");
        assert_eq!(codec.decompress(&compressed).unwrap(), data);
    }

    #[test]
    fn a_compressor_reused_after_a_large_reply_still_makes_small_ones_alone() {
        let codec = CappedDeflate::new(1 << 22);
        codec.compress(&sample(300_000, 11)).unwrap();
        let small = sample(100, 12);
        let compressed = codec.compress(&small).unwrap();
        assert_eq!(reference_inflate(&compressed), small);
        assert!(compressed.len() < 200, "{} bytes", compressed.len());
    }

    /// Text of `len` bytes from a 62-letter alphabet, as random as the
    /// generator: what base64 of a file or of ciphertext looks like.
    fn random_text(len: usize, seed: u64) -> Vec<u8> {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                alphabet[(state % 62) as usize]
            })
            .collect()
    }

    /// State-like JSON of `len` bytes: the same few keys over and over.
    fn json_text(len: usize) -> Vec<u8> {
        let mut text = Vec::with_capacity(len + 64);
        for i in 0.. {
            if text.len() >= len {
                break;
            }
            let value = format!(
                r#"{{"developerName":"field{i}","contentValue":"{}"}},"#,
                i * 7919
            );
            text.extend_from_slice(value.as_bytes());
        }
        text.truncate(len);
        text
    }

    #[test]
    fn short_replies_are_always_compressed() {
        for len in [0, 1, 1024, SAMPLE_BYTES] {
            assert!(worth_compressing(&random_text(len, 3)), "length {len}");
        }
    }

    #[test]
    fn a_long_reply_is_compressed_when_its_sample_shrinks_by_a_tenth() {
        let compressible = json_text(SAMPLE_BYTES + 1);
        assert!(worth_compressing(&compressible));
        let random = random_text(300_000, 5);
        assert!(!worth_compressing(&random));
        // What level 1 makes of the random text, the reason it is skipped.
        let made = CappedDeflate::new(0).compress(&random).unwrap();
        assert!(made.len() * 10 > random.len() * 9, "{} bytes", made.len());
        // Only the start is sampled: random text behind a compressible
        // start is compressed.
        let mut mixed = json_text(SAMPLE_BYTES);
        mixed.extend_from_slice(&random);
        assert!(worth_compressing(&mixed));
    }

    #[test]
    fn a_sample_leaves_the_compressor_as_good_as_new() {
        let codec = CappedDeflate::new(1 << 22);
        assert!(!worth_compressing(&random_text(100_000, 7)));
        let small = sample(500, 8);
        assert_eq!(reference_inflate(&codec.compress(&small).unwrap()), small);
    }

    #[test]
    fn bytes_after_the_end_of_the_stream_are_ignored() {
        let data = sample(2_000, 9);
        let mut compressed = reference_deflate(&data);
        compressed.extend_from_slice(b"trailing bytes");
        let opened = CappedDeflate::new(1 << 20).decompress(&compressed).unwrap();
        assert_eq!(opened, data);
    }
}
