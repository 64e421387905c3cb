//! Taking a backup in the daemon: a [`Snapshot`] written through the
//! [`format`](super::format) writer into a bounded stream of compressed
//! chunks, which the admin channel sends to the `backup` command as they
//! come. Compression runs on a blocking thread; a client that goes away
//! ends the scan (and the backup epoch) at its next chunk.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::format::{BackupFile, Header, Writer, FORMAT_VERSION};
use crate::store::Snapshot;

/// Compressed bytes gathered before a chunk is sent.
const CHUNK_BYTES: usize = 64 * 1024;

/// A backup file's bytes as an HTTP body.
#[derive(Debug)]
pub struct BackupBody {
    chunks: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl Body for BackupBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(Frame::data)))
    }
}

/// Sends what is written to it as chunks.
struct ChunkSender {
    chunks: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.chunks
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
            })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts writing `snapshot` of an `engine` store as a backup file, after
/// `files` when the backup includes keys (`Some`); the returned body
/// yields its bytes. Content never reaches the log.
pub fn start(
    snapshot: Snapshot,
    engine: &str,
    now: OffsetDateTime,
    files: Option<Vec<BackupFile>>,
) -> BackupBody {
    let (sender, chunks) = mpsc::channel(8);
    let header = Header {
        format_version: FORMAT_VERSION,
        flow_store_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at: now.format(&Rfc3339).unwrap_or_default(),
        engine: engine.to_string(),
        includes_keys: files.is_some(),
    };
    tokio::task::spawn_blocking(move || {
        let errors = sender.clone();
        let out = std::io::BufWriter::with_capacity(CHUNK_BYTES, ChunkSender { chunks: sender });
        match write_all(snapshot, out, &header, &files.unwrap_or_default()) {
            Ok(states) => log::info!("backup: {states} state(s) sent"),
            Err(e) => {
                log::warn!("backup: stopped: {e}");
                let _ = errors.blocking_send(Err(e));
            }
        }
    });
    BackupBody { chunks }
}

fn write_all<W: Write>(
    mut snapshot: Snapshot,
    out: W,
    header: &Header,
    files: &[BackupFile],
) -> std::io::Result<u64> {
    let mut writer = Writer::new(out, header)?;
    for file in files {
        writer.file(file)?;
    }
    while let Some(state) = snapshot.blocking_next() {
        let state =
            state.map_err(|e| std::io::Error::other(format!("reading the database: {e}")))?;
        writer.state(&state)?;
    }
    let states = writer.states();
    writer.finish()?.flush()?;
    Ok(states)
}
