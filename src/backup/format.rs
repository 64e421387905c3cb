//! The backup file format, version 1: one zstd frame (with zstd's own
//! content checksum) holding
//!
//! ```text
//! MAGIC                      "FLOW-STORE-BACKUP\n"
//! record 'H'                 header: JSON {format_version, flow_store_version, created_at, engine, includes_keys}
//! record 'F' …               with --include-keys only: one per file: meta length (u32 BE) | JSON {role, path} | bytes
//! record 'S' …               one per state: tenant (16) | id (16) | meta length (u32 BE) | meta JSON | content
//! record 'E'                 end: JSON {states, files, sha256} (SHA-256 of every byte before this record)
//! ```
//!
//! Each record is `kind (1) | length (u32 BE) | payload | check (8)`, the
//! check being the first 8 bytes of the SHA-256 of kind, length and
//! payload. Header and end together are the manifest. Streamed both ways:
//! neither writer nor reader holds more than one record.
//!
//! The reader says where a file is bad as the **byte offset in the file**
//! at which the problem was detected: never before the damaged byte, and
//! at most one zstd block (which the writer ends every 64 KiB of records)
//! plus the reader's 4 KiB step after it. It never returns a state it has
//! not checked.

use std::io::{BufReader, Read, Write};

use aws_lc_rs::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{State, StateMeta};

/// The first bytes of every backup, once decompressed.
pub const MAGIC: &[u8] = b"FLOW-STORE-BACKUP\n";
/// The format this release writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The largest record accepted: a state is at most the request body limit.
const MAX_RECORD_BYTES: u32 = 1 << 30;
const CHECK_BYTES: usize = 8;
const KIND_HEADER: u8 = b'H';
const KIND_STATE: u8 = b'S';
const KIND_FILE: u8 = b'F';
const KIND_END: u8 = b'E';
// The reader's step through the compressed file (the offset precision).
const READ_STEP: usize = 4096;
// The writer ends a zstd block after this many uncompressed bytes, so a
// damaged byte is detected at most this far (compressed) after it.
const BLOCK_BYTES: u64 = 64 * 1024;

/// What the file says about itself before its states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The flow-store release that wrote it.
    pub flow_store_version: String,
    /// When the cut was made (RFC 3339, UTC).
    pub created_at: String,
    /// The storage engine backed up ("sled").
    pub engine: String,
    /// Whether configuration, TLS and key files (private keys) are in it.
    #[serde(default)]
    pub includes_keys: bool,
}

/// What a file in a backup with keys is for: it decides the owner and
/// mode a restore gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileRole {
    /// The configuration file.
    Config,
    /// The TLS certificate chain.
    TlsCert,
    /// The TLS private key.
    TlsKey,
    /// The HTTP Basic password file.
    BasicPassword,
    /// A store's platform key.
    PlatformKey,
    /// A store's receiver key (private).
    ReceiverKey,
}

/// A configuration, TLS or key file, as found on the backed-up server.
#[derive(Clone, PartialEq, Eq)]
pub struct BackupFile {
    /// What it is.
    pub role: FileRole,
    /// Where it was (absolute).
    pub path: std::path::PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for BackupFile {
    // Key material: never print the bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupFile")
            .field("role", &self.role)
            .field("path", &self.path)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct FileMeta {
    role: FileRole,
    path: std::path::PathBuf,
}

/// One record of a backup's body.
#[derive(Debug)]
pub enum Entry {
    /// A configuration, TLS or key file.
    File(BackupFile),
    /// A state (boxed: by far the bigger variant, and the common one
    /// is moved only once).
    State(Box<State>),
}

/// What the file says about itself after its states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// States in the file.
    pub states: u64,
    /// Files in the file (with --include-keys).
    #[serde(default)]
    pub files: u64,
    /// Hex SHA-256 of the uncompressed bytes before the end record.
    pub sha256: String,
}

/// Why a backup file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file ends before its end record.
    #[error("the backup is truncated at byte offset {offset}: it ends before its end record (an interrupted copy or a full disk?); use another backup")]
    Truncated {
        /// Bytes of the file read when its end was met.
        offset: u64,
    },
    /// Something in the file is not what was written.
    #[error("the backup is corrupt at byte offset {offset}: {what}; use another backup")]
    Corrupt {
        /// Byte offset in the file where the damage was detected.
        offset: u64,
        /// What was wrong.
        what: String,
    },
    /// A backup from a newer release.
    #[error("the backup has format version {found}; this release reads version {FORMAT_VERSION} (restore with a newer flow-store)")]
    UnsupportedVersion {
        /// The version in the file.
        found: u32,
    },
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Hashes what passes through to `inner`.
struct Hashing<W> {
    inner: W,
    sha: Context,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a backup to `W`.
pub struct Writer<W: Write> {
    out: Hashing<zstd::stream::write::Encoder<'static, W>>,
    states: u64,
    files: u64,
    since_block: u64,
}

impl<W: Write> Writer<W> {
    /// Starts a backup: magic and header.
    pub fn new(out: W, header: &Header) -> std::io::Result<Writer<W>> {
        // Level 3: zstd's default, fast enough to keep up with the scan.
        let mut encoder = zstd::stream::write::Encoder::new(out, 3)?;
        encoder.include_checksum(true)?;
        let mut writer = Writer {
            out: Hashing {
                inner: encoder,
                sha: Context::new(&SHA256),
            },
            states: 0,
            files: 0,
            since_block: 0,
        };
        writer.out.write_all(MAGIC)?;
        writer.record(KIND_HEADER, &[&to_json(header)])?;
        Ok(writer)
    }

    /// Appends one state.
    pub fn state(&mut self, state: &State) -> std::io::Result<()> {
        let meta = to_json(&state.meta);
        let meta_len = u32::try_from(meta.len()).map_err(|_| too_large())?;
        self.record(
            KIND_STATE,
            &[
                state.tenant.as_bytes(),
                state.id.as_bytes(),
                &meta_len.to_be_bytes(),
                &meta,
                state.content.as_bytes(),
            ],
        )?;
        self.states += 1;
        Ok(())
    }

    /// Appends a file (before the states).
    pub fn file(&mut self, file: &BackupFile) -> std::io::Result<()> {
        let meta = to_json(&FileMeta {
            role: file.role,
            path: file.path.clone(),
        });
        let meta_len = u32::try_from(meta.len()).map_err(|_| too_large())?;
        self.record(KIND_FILE, &[&meta_len.to_be_bytes(), &meta, &file.bytes])?;
        self.files += 1;
        Ok(())
    }

    /// States written so far.
    pub fn states(&self) -> u64 {
        self.states
    }

    /// Writes the end record and finishes the zstd frame; returns the sink.
    pub fn finish(mut self) -> std::io::Result<W> {
        let sha = hex(self.out.sha.clone().finish().as_ref());
        let end = End {
            states: self.states,
            files: self.files,
            sha256: sha,
        };
        self.record(KIND_END, &[&to_json(&end)])?;
        self.out.inner.finish()
    }

    fn record(&mut self, kind: u8, parts: &[&[u8]]) -> std::io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_RECORD_BYTES)
            .ok_or_else(too_large)?;
        let mut check = Context::new(&SHA256);
        check.update(&[kind]);
        check.update(&len.to_be_bytes());
        self.out.write_all(&[kind])?;
        self.out.write_all(&len.to_be_bytes())?;
        for part in parts {
            check.update(part);
            self.out.write_all(part)?;
        }
        self.out
            .write_all(&check.finish().as_ref()[..CHECK_BYTES])?;
        self.since_block += u64::from(len);
        if self.since_block >= BLOCK_BYTES {
            // Ends the zstd block: bounds how far after damage it shows.
            self.out.flush()?;
            self.since_block = 0;
        }
        Ok(())
    }
}

fn too_large() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "a state is larger than a backup record can hold (1 GiB)",
    )
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data (strings, numbers, UUIDs, booleans) always serializes.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Counts the compressed bytes the decoder has taken from the file.
struct Counting<R> {
    inner: R,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads and checks a backup, record by record.
pub struct Reader<R: Read> {
    input: zstd::stream::read::Decoder<'static, BufReader<Counting<R>>>,
    file_offset: std::sync::Arc<std::sync::atomic::AtomicU64>,
    sha: Context,
    header: Header,
    states: u64,
    files: u64,
    end: Option<End>,
}

impl<R: Read> Reader<R> {
    /// Opens a backup: checks magic, header and format version.
    pub fn new(file: R) -> Result<Reader<R>, FormatError> {
        let file_offset = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counting = Counting {
            inner: file,
            read: std::sync::Arc::clone(&file_offset),
        };
        let buffered = BufReader::with_capacity(READ_STEP, counting);
        let input = zstd::stream::read::Decoder::with_buffer(buffered)?;
        let mut reader = Reader {
            input,
            file_offset,
            sha: Context::new(&SHA256),
            header: Header {
                format_version: 0,
                flow_store_version: String::new(),
                created_at: String::new(),
                engine: String::new(),
                includes_keys: false,
            },
            states: 0,
            files: 0,
            end: None,
        };
        let mut magic = vec![0u8; MAGIC.len()];
        reader.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(reader.corrupt("this is not a flow-store backup (no magic)"));
        }
        let (kind, payload) = reader.record()?;
        if kind != KIND_HEADER {
            return Err(reader.corrupt("the header record is missing"));
        }
        let header: Header = serde_json::from_slice(&payload)
            .map_err(|_| reader.corrupt("the header is not valid"))?;
        if header.format_version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion {
                found: header.format_version,
            });
        }
        reader.header = header;
        Ok(reader)
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Compressed bytes read so far.
    pub fn file_offset(&self) -> u64 {
        self.file_offset.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The next state, skipping files, or `None` once the end record is
    /// read and every check (counts, SHA-256, nothing after it) passed.
    pub fn next_state(&mut self) -> Result<Option<State>, FormatError> {
        loop {
            match self.next_entry()? {
                Some(Entry::State(state)) => return Ok(Some(*state)),
                Some(Entry::File(_)) => continue,
                None => return Ok(None),
            }
        }
    }

    /// The next file or state, or `None` once the end record is read and
    /// every check passed.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, FormatError> {
        if self.end.is_some() {
            return Ok(None);
        }
        let sha_before = self.sha.clone();
        let (kind, payload) = self.record()?;
        match kind {
            KIND_STATE => {
                let state = self.decode_state(&payload)?;
                self.states += 1;
                Ok(Some(Entry::State(Box::new(state))))
            }
            KIND_FILE => {
                let file = self.decode_file(&payload)?;
                self.files += 1;
                Ok(Some(Entry::File(file)))
            }
            KIND_END => {
                self.check_end(&payload, sha_before)?;
                Ok(None)
            }
            other => Err(self.corrupt(&format!("unknown record kind {other:#04x}"))),
        }
    }

    /// The end record, once [`Reader::next_state`] returned `None`.
    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    fn check_end(&mut self, payload: &[u8], sha_before: Context) -> Result<(), FormatError> {
        let end: End = serde_json::from_slice(payload)
            .map_err(|_| self.corrupt("the end record is not valid"))?;
        if end.states != self.states || end.files != self.files {
            return Err(self.corrupt(&format!(
                "the end record counts {} states and {} files, the file holds {} and {}",
                end.states, end.files, self.states, self.files
            )));
        }
        if hex(sha_before.finish().as_ref()) != end.sha256 {
            return Err(self.corrupt("the SHA-256 of the contents does not match the manifest"));
        }
        // Nothing may follow; reading on also makes zstd check its frame.
        let mut rest = [0u8; 1];
        match self.input.read(&mut rest) {
            Ok(0) => {}
            Ok(_) => return Err(self.corrupt("data follows the end record")),
            Err(e) => return Err(self.io_error(e)),
        }
        self.end = Some(end);
        Ok(())
    }

    fn decode_state(&self, payload: &[u8]) -> Result<State, FormatError> {
        let bad = |what: &str| self.corrupt(&format!("a state record is not valid: {what}"));
        if payload.len() < 36 {
            return Err(bad("too short"));
        }
        let tenant = Uuid::from_slice(&payload[..16]).map_err(|_| bad("tenant"))?;
        let id = Uuid::from_slice(&payload[16..32]).map_err(|_| bad("id"))?;
        let mut len = [0u8; 4];
        len.copy_from_slice(&payload[32..36]);
        let meta_len = u32::from_be_bytes(len) as usize;
        let rest = &payload[36..];
        if meta_len > rest.len() {
            return Err(bad("metadata length"));
        }
        let (meta, content) = rest.split_at(meta_len);
        let meta: StateMeta = serde_json::from_slice(meta).map_err(|_| bad("metadata"))?;
        let content = String::from_utf8(content.to_vec()).map_err(|_| bad("content"))?;
        Ok(State {
            tenant,
            id,
            meta,
            content,
        })
    }

    fn decode_file(&self, payload: &[u8]) -> Result<BackupFile, FormatError> {
        let bad = || self.corrupt("a file record is not valid");
        let (len, rest) = payload.split_at_checked(4).ok_or_else(bad)?;
        let meta_len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let (meta, bytes) = rest.split_at_checked(meta_len).ok_or_else(bad)?;
        let meta: FileMeta = serde_json::from_slice(meta).map_err(|_| bad())?;
        if !meta.path.is_absolute() {
            return Err(bad());
        }
        Ok(BackupFile {
            role: meta.role,
            path: meta.path,
            bytes: bytes.to_vec(),
        })
    }

    fn record(&mut self) -> Result<(u8, Vec<u8>), FormatError> {
        let mut head = [0u8; 5];
        self.read_exact(&mut head)?;
        let kind = head[0];
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if len > MAX_RECORD_BYTES {
            return Err(self.corrupt("a record length is out of range"));
        }
        let mut payload = vec![0u8; len as usize];
        self.read_exact(&mut payload)?;
        let mut check = [0u8; CHECK_BYTES];
        self.input
            .read_exact(&mut check)
            .map_err(|e| self.io_error(e))?;
        let mut expected = Context::new(&SHA256);
        expected.update(&head);
        expected.update(&payload);
        if expected.finish().as_ref()[..CHECK_BYTES] != check {
            return Err(self.corrupt("a record's checksum does not match"));
        }
        self.sha.update(&check);
        Ok((kind, payload))
    }

    // Reads exactly `buf`, hashing it into the contents' SHA-256.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), FormatError> {
        self.input.read_exact(buf).map_err(|e| self.io_error(e))?;
        self.sha.update(buf);
        Ok(())
    }

    fn io_error(&self, e: std::io::Error) -> FormatError {
        let offset = self.file_offset();
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => FormatError::Truncated { offset },
            // zstd reports a frame that stops mid-way as "incomplete".
            _ if e.to_string().contains("incomplete") => FormatError::Truncated { offset },
            std::io::ErrorKind::Other | std::io::ErrorKind::InvalidData => FormatError::Corrupt {
                offset,
                what: format!("cannot decompress ({e})"),
            },
            _ => FormatError::Io(e),
        }
    }

    fn corrupt(&self, what: &str) -> FormatError {
        FormatError::Corrupt {
            offset: self.file_offset(),
            what: what.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;

    fn header() -> Header {
        Header {
            format_version: FORMAT_VERSION,
            flow_store_version: "0.0.0".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            engine: "sled".into(),
            includes_keys: false,
        }
    }

    fn states(n: usize) -> Vec<State> {
        (0..n)
            .map(|i| State {
                tenant: Uuid::new_v4(),
                id: Uuid::new_v4(),
                meta: StateMeta {
                    parent: None,
                    flow: Some(Uuid::new_v4()),
                    flow_version: None,
                    current_map_element: None,
                    current_user: None,
                    is_done: i % 2 == 0,
                    created_at: None,
                    updated_at: Timestamp::parse("2026-01-01T10:00:00.1234567+01:00").unwrap(),
                    expires_at: None,
                },
                // Varied content so that zstd cannot squeeze it to nothing.
                content: format!(
                    "{{\"n\":{i},\"pad\":\"{}\"}}",
                    Uuid::new_v4().to_string().repeat(20)
                ),
            })
            .collect()
    }

    fn backup(states: &[State]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        for s in states {
            w.state(s).unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<State>, FormatError> {
        let mut r = Reader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(s) = r.next_state()? {
            out.push(s);
        }
        assert_eq!(r.end().unwrap().states, out.len() as u64);
        Ok(out)
    }

    #[test]
    fn round_trips_every_state_exactly() {
        let original = states(300);
        let bytes = backup(&original);
        let mut r = Reader::new(&bytes[..]).unwrap();
        assert_eq!(r.header(), &header());
        let mut back = Vec::new();
        while let Some(s) = r.next_state().unwrap() {
            back.push(s);
        }
        assert!(back == original);
        assert!(read_all(&backup(&[])).unwrap().is_empty());
    }

    #[test]
    fn every_truncation_is_refused_with_its_offset() {
        let bytes = backup(&states(50));
        for cut in [0, 1, 10, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
            match read_all(&bytes[..cut]) {
                Err(FormatError::Truncated { offset }) => {
                    assert_eq!(offset, cut as u64, "truncated at {cut}")
                }
                other => panic!("truncated at {cut}: {:?}", other.map(|s| s.len())),
            }
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_is_refused_near_its_offset() {
        let bytes = backup(&states(200));
        let step = (bytes.len() / 40).max(1);
        for at in (0..bytes.len()).step_by(step) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            match read_all(&bad) {
                Err(FormatError::Corrupt { offset, .. })
                | Err(FormatError::Truncated { offset }) => {
                    assert!(
                        offset as usize > at
                            && offset <= at as u64 + BLOCK_BYTES + READ_STEP as u64,
                        "byte {at} flipped, reported at {offset}"
                    );
                }
                Err(FormatError::UnsupportedVersion { .. }) => {}
                other => panic!("byte {at} flipped: {:?}", other.map(|s| s.len())),
            }
        }
    }

    #[test]
    fn files_come_back_with_their_role_and_path() {
        let file = BackupFile {
            role: FileRole::ReceiverKey,
            path: "/etc/flow-store/keys/r.jwk".into(),
            bytes: b"{\"kty\":\"EC\"}\n".to_vec(),
        };
        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        w.file(&file).unwrap();
        w.state(&states(1)[0]).unwrap();
        let bytes = w.finish().unwrap();
        let mut r = Reader::new(&bytes[..]).unwrap();
        assert!(matches!(r.next_entry().unwrap(), Some(Entry::File(f)) if f == file));
        assert!(matches!(r.next_entry().unwrap(), Some(Entry::State(_))));
        assert!(r.next_entry().unwrap().is_none());
        assert_eq!((r.end().unwrap().states, r.end().unwrap().files), (1, 1));
        assert_eq!(read_all(&bytes).unwrap().len(), 1, "next_state skips files");
    }

    #[test]
    fn trailing_data_is_refused() {
        let mut bytes = backup(&states(3));
        bytes.extend_from_slice(b"junk");
        assert!(matches!(read_all(&bytes), Err(FormatError::Corrupt { .. })));
    }
}
