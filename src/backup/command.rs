//! The operator commands: `flow-store backup` (from the running daemon,
//! over the admin socket), `flow-store backup verify` and `flow-store
//! restore` (both without a running store).
//!
//! A backup is written to a hidden temporary file (mode 0600: it holds
//! state content in plain text) beside its destination, made durable,
//! verified end to end, and only then renamed into place. A restore writes
//! into a new directory beside the target and renames it into place only
//! once the whole file has verified, so a bad file leaves nothing behind.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use http_body_util::BodyExt;
use time::OffsetDateTime;

use super::format::{BackupFile, End, Entry, FileRole, FormatError, Header, Reader};
use super::keys::KeyFilesError;
use super::progress::{Progress, Unit};
use crate::admin::api::{BackupDone, STATES_HEADER};
use crate::admin::socket::{self, AdminError};
use crate::model::State;
use crate::store::postgres::{PostgresOptions, PostgresStore};
use crate::store::sled::SledStore;
use crate::store::{Store, StoreError};

/// States saved per transaction while restoring.
const RESTORE_BATCH: usize = 256;

/// Why a backup, verify or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The admin channel failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The file is not a good backup.
    #[error("{file}: {error}")]
    Format {
        /// The backup file.
        file: PathBuf,
        /// What is wrong with it.
        error: FormatError,
    },
    /// A file could not be read or written.
    #[error("{what} {}: {error}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// The restore target holds something already.
    #[error("{} is not empty; restore only into an empty or missing data directory: stop the store (`systemctl stop flow-store`), move the directory aside (`mv {dir} {dir}.old`) and run restore again", .0.display(), dir = .0.display())]
    TargetNotEmpty(PathBuf),
    /// The PostgreSQL database to restore into holds states already.
    #[error("the PostgreSQL database (storage.postgres.url) already holds {0} states; restore only into an empty one: create a new database (or drop the flow_store_* tables of this one) and run restore again")]
    DatabaseNotEmpty(u64),
    /// The store is running.
    #[error("the store is running (it answers on {}); stop it first with `systemctl stop flow-store`, then restore", .0.display())]
    StoreRunning(PathBuf),
    /// The database refused.
    #[error("the restored database: {0}")]
    Store(#[from] StoreError),
    /// Configuration, TLS or key files could not be restored.
    #[error(transparent)]
    KeyFiles(#[from] KeyFilesError),
    /// `--with-keys` on a backup without keys.
    #[error("{} holds no configuration or key files (it was taken without --include-keys); restore without --with-keys", .0.display())]
    NoKeys(PathBuf),
    /// The stream from the daemon broke off.
    #[error("the backup stream from the store broke off: {0}; nothing was kept, try again (the store's log says why)")]
    Stream(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BackupError + 'a {
    move |error| BackupError::Io {
        what,
        path: path.to_path_buf(),
        error,
    }
}

/// Makes a rename into `dir` durable: a renamed name lasts once the
/// directory holding it is synced.
fn sync_directory(dir: &Path) -> Result<(), BackupError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot flush the directory", dir))
}

/// What a checked backup holds.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Its header.
    pub header: Header,
    /// Its end record.
    pub end: End,
    /// Its size in bytes.
    pub bytes: u64,
    /// The configuration, TLS and key files restored (`--with-keys`).
    pub files_restored: Vec<PathBuf>,
}

impl Verified {
    /// The manifest, as `verify` prints it.
    pub fn describe(&self) -> String {
        let keys = if self.header.includes_keys {
            format!(
                ", and {} configuration, TLS and key files (PRIVATE KEYS)",
                self.end.files
            )
        } else {
            String::new()
        };
        format!(
            "format version {}, written by flow-store {} at {} from a {} store: {} states{keys}, {} bytes, contents SHA-256 {}",
            self.header.format_version,
            self.header.flow_store_version,
            self.header.created_at,
            self.header.engine,
            self.end.states,
            self.bytes,
            self.end.sha256
        )
    }
}

/// Reads `file` whole and checks everything; calls `each` with every file
/// and state (checked) in order. Nothing is returned from a bad file but
/// the error.
pub fn read_checked(
    file: &Path,
    mut each: impl FnMut(Entry) -> Result<(), BackupError>,
) -> Result<Verified, BackupError> {
    let format = |error| BackupError::Format {
        file: file.to_path_buf(),
        error,
    };
    let opened = File::open(file).map_err(io("cannot open", file))?;
    let bytes = opened.metadata().map_err(io("cannot read", file))?.len();
    let mut reader = Reader::new(opened).map_err(format)?;
    while let Some(entry) = reader.next_entry().map_err(format)? {
        each(entry)?;
    }
    let header = reader.header().clone();
    // `next_state` returned `None`: the end record was read and checked.
    let end = reader
        .end()
        .cloned()
        .ok_or_else(|| format(FormatError::Truncated { offset: bytes }))?;
    Ok(Verified {
        header,
        end,
        bytes,
        files_restored: Vec::new(),
    })
}

/// `flow-store backup verify FILE`; `states`, if known, sizes the
/// progress bar.
pub fn verify(file: &Path, states: Option<u64>) -> Result<Verified, BackupError> {
    let mut progress = Progress::new("verify", Unit::States, states);
    let verified = read_checked(file, |entry| {
        if matches!(entry, Entry::State(_)) {
            progress.add(1);
        }
        Ok(())
    })?;
    progress.finish();
    Ok(verified)
}

/// Where `backup` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// This file.
    File(PathBuf),
    /// Standard output (`-`), unverified: the command cannot re-read it.
    Stdout,
}

/// The default file name of a backup taken at `now`.
pub fn default_name(now: OffsetDateTime) -> String {
    format!(
        "flow-store-{:04}{:02}{:02}T{:02}{:02}{:02}Z.backup",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// `flow-store backup`: streams a backup from the daemon on `socket` to
/// `output` (with the configuration, TLS and key files if `include_keys`),
/// verifies it and tells the daemon. Returns what was written.
pub async fn take(
    socket: &Path,
    output: &Output,
    include_keys: bool,
) -> Result<BackupDone, BackupError> {
    let path = if include_keys {
        "/backup?include-keys"
    } else {
        "/backup"
    };
    let response = socket::request(socket, socket::get(path)).await?;
    let estimate = response
        .headers()
        .get(STATES_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = response.into_body();
    let done = match output {
        Output::Stdout => {
            let mut out = std::io::stdout().lock();
            let bytes = copy_body(&mut body, &mut out, Path::new("-")).await?;
            BackupDone {
                at: String::new(),
                file: "-".into(),
                bytes,
                states: estimate.unwrap_or_default(),
            }
        }
        Output::File(path) => write_file(&mut body, path, estimate).await?,
    };
    let record = serde_json::to_value(&done).unwrap_or_default();
    socket::request(socket, socket::post_json("/backup/completed", &record)).await?;
    Ok(done)
}

async fn write_file(
    body: &mut hyper::body::Incoming,
    path: &Path,
    estimate: Option<u64>,
) -> Result<BackupDone, BackupError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let temp = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let result = write_verified(body, &temp, path, estimate).await;
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    let verified = result?;
    std::fs::rename(&temp, path).map_err(io("cannot rename the backup to", path))?;
    sync_directory(&dir)?;
    Ok(BackupDone {
        at: String::new(),
        file: std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string(),
        bytes: verified.bytes,
        states: verified.end.states,
    })
}

async fn write_verified(
    body: &mut hyper::body::Incoming,
    temp: &Path,
    path: &Path,
    estimate: Option<u64>,
) -> Result<Verified, BackupError> {
    // 0600 from the first byte: the file holds state content.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(io("cannot create", temp))?;
    copy_body(body, &mut file, path).await?;
    file.sync_all().map_err(io("cannot flush", temp))?;
    drop(file);
    verify(temp, estimate).map_err(|e| match e {
        // Name the destination, not the temporary file.
        BackupError::Format { error, .. } => BackupError::Format {
            file: path.to_path_buf(),
            error,
        },
        other => other,
    })
}

async fn copy_body(
    body: &mut hyper::body::Incoming,
    out: &mut impl Write,
    path: &Path,
) -> Result<u64, BackupError> {
    let mut progress = Progress::new("backup", Unit::Bytes, None);
    let mut written = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BackupError::Stream(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            out.write_all(&data).map_err(io("cannot write", path))?;
            written += data.len() as u64;
            progress.add(data.len() as u64);
        }
    }
    out.flush().map_err(io("cannot write", path))?;
    progress.finish();
    Ok(written)
}

/// Where a restore writes: the engine `storage.engine` names.
#[derive(Debug, Clone, Copy)]
pub enum RestoreTarget<'a> {
    /// A sled database directory, missing or empty, with the page cache to
    /// open it with.
    Sled {
        /// `storage.path`.
        dir: &'a Path,
        /// `storage.cache_capacity_bytes`.
        cache_bytes: u64,
    },
    /// A PostgreSQL database whose flow-store tables hold no state.
    Postgres(&'a PostgresOptions),
}

/// `flow-store restore FILE`: into `target` (see [`RestoreTarget`]), while
/// no store answers on `socket`; with `with_keys`, the backup's
/// configuration, TLS and key files go back where they were too, none of
/// them existing yet. Runs the engine's calls on `runtime`. A file that
/// fails verification leaves nothing written.
pub fn restore(
    runtime: &tokio::runtime::Runtime,
    file: &Path,
    target: RestoreTarget<'_>,
    socket: Option<&Path>,
    with_keys: bool,
) -> Result<Verified, BackupError> {
    if let Some(socket) = socket {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(BackupError::StoreRunning(socket.to_path_buf()));
        }
    }
    let (mut verified, files) = match target {
        RestoreTarget::Sled { dir, cache_bytes } => {
            restore_to_sled(runtime, file, dir, cache_bytes, with_keys)?
        }
        RestoreTarget::Postgres(options) => restore_to_postgres(runtime, file, options, with_keys)?,
    };
    if with_keys {
        if !verified.header.includes_keys {
            return Err(BackupError::NoKeys(file.to_path_buf()));
        }
        super::keys::install(&files, &crate::admin::keys::Ownership::for_service())?;
        verified.files_restored = files.into_iter().map(|f| f.path).collect();
    }
    Ok(verified)
}

// Into a staging directory beside `target`, renamed over it only once the
// whole file verified: a bad byte leaves nothing.
fn restore_to_sled(
    runtime: &tokio::runtime::Runtime,
    file: &Path,
    target: &Path,
    cache_bytes: u64,
    with_keys: bool,
) -> Result<(Verified, Vec<BackupFile>), BackupError> {
    ensure_empty(target)?;
    let staging = staging_dir(target);
    let restored = SledStore::open(&staging, cache_bytes)
        .map_err(BackupError::from)
        .and_then(|store| restore_into(runtime, file, &store, with_keys));
    let restored = match restored {
        Ok(restored) => restored,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    adopt_owner(target, &staging)?;
    if target.exists() {
        std::fs::remove_dir(target).map_err(io("cannot replace the empty directory", target))?;
    }
    std::fs::rename(&staging, target)
        .map_err(io("cannot move the restored database to", target))?;
    sync_directory(
        target
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )?;
    Ok(restored)
}

// A database cannot be renamed into place: the whole file is verified
// first, so a bad byte leaves nothing, then written in batches.
fn restore_to_postgres(
    runtime: &tokio::runtime::Runtime,
    file: &Path,
    options: &PostgresOptions,
    with_keys: bool,
) -> Result<(Verified, Vec<BackupFile>), BackupError> {
    read_checked(file, |_| Ok(()))?;
    let store = runtime.block_on(PostgresStore::open(options))?;
    let held = runtime.block_on(store.stats())?.states;
    if held > 0 {
        return Err(BackupError::DatabaseNotEmpty(held));
    }
    restore_into(runtime, file, &store, with_keys)
}

fn staging_dir(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    target.with_file_name(format!(".{name}.restoring-{}", std::process::id()))
}

fn ensure_empty(target: &Path) -> Result<(), BackupError> {
    match std::fs::read_dir(target) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(BackupError::TargetNotEmpty(target.to_path_buf())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("cannot read", target)(e)),
    }
}

// Writes the states into `store`; returns the files too when asked
// (checked not to exist as they come, so a conflict stops early).
fn restore_into(
    runtime: &tokio::runtime::Runtime,
    file: &Path,
    store: &dyn Store,
    with_keys: bool,
) -> Result<(Verified, Vec<BackupFile>), BackupError> {
    let mut progress = Progress::new("restore", Unit::States, None);
    let mut batch = Vec::with_capacity(RESTORE_BATCH);
    let mut files = Vec::new();
    // The first bad byte stops everything before the rename.
    let mut save = |batch: Vec<State>| -> Result<(), BackupError> {
        let n = batch.len() as u64;
        runtime.block_on(store.save_all(batch))?;
        progress.add(n);
        Ok(())
    };
    let verified = read_checked(file, |entry| {
        match entry {
            Entry::State(state) => {
                batch.push(*state);
                if batch.len() == RESTORE_BATCH {
                    save(std::mem::take(&mut batch))?;
                }
            }
            Entry::File(f) if with_keys => {
                let exist = super::keys::existing(std::slice::from_ref(&f));
                if !exist.is_empty() {
                    return Err(KeyFilesError::Exist(exist).into());
                }
                files.push(f);
            }
            Entry::File(_) => {}
        }
        Ok(())
    })?;
    if !batch.is_empty() {
        save(batch)?;
    }
    runtime.block_on(store.close())?;
    progress.finish();
    Ok((verified, files))
}

/// The configuration inside a backup taken with `--include-keys`, for a
/// restore onto a server that lost its own: its paths resolve against the
/// directory the file was in. `None` if the backup has no configuration.
pub fn config_in(file: &Path) -> Result<Option<crate::config::Config>, BackupError> {
    let format = |error| BackupError::Format {
        file: file.to_path_buf(),
        error,
    };
    let opened = File::open(file).map_err(io("cannot open", file))?;
    let mut reader = Reader::new(opened).map_err(format)?;
    // Files come first: the configuration, if any, is among them.
    while let Some(Entry::File(f)) = reader.next_entry().map_err(format)? {
        if f.role != FileRole::Config {
            continue;
        }
        let text = String::from_utf8(f.bytes).map_err(|_| {
            format(FormatError::Corrupt {
                offset: reader.file_offset(),
                what: "the configuration file is not UTF-8".into(),
            })
        })?;
        let mut config = crate::config::Config::from_toml_str(&text).map_err(|e| {
            format(FormatError::Corrupt {
                offset: reader.file_offset(),
                what: format!("the configuration in it does not load: {e}"),
            })
        })?;
        if let Some(dir) = f.path.parent() {
            config.resolve_paths(dir);
        }
        config.source_path = Some(f.path);
        return Ok(Some(config));
    }
    Ok(None)
}

// A restore run as root for the packaged service must leave the database
// to the service's user, as the directory it replaces was.
fn adopt_owner(target: &Path, staging: &Path) -> Result<(), BackupError> {
    let Ok(meta) = std::fs::metadata(target) else {
        return Ok(());
    };
    if !crate::admin::running_as_root() {
        return Ok(());
    }
    let (uid, gid, mode) = (meta.uid(), meta.gid(), meta.mode());
    chown_tree(staging, uid, gid)?;
    std::fs::set_permissions(
        staging,
        std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
    )
    .map_err(io("cannot set the mode of", staging))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), BackupError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io("cannot chown", path))?;
    if std::fs::symlink_metadata(path)
        .map_err(io("cannot read", path))?
        .is_dir()
    {
        for entry in std::fs::read_dir(path).map_err(io("cannot read", path))? {
            let entry = entry.map_err(io("cannot read", path))?;
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}
