//! The operator commands' glue: find the socket and the configuration,
//! run the library call, print the outcome, choose the exit status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{config_path, AdminArgs};
use crate::backup::command::{self as backup, BackupError, Output, RestoreTarget};
use crate::cli::output::{out, outln};
use crate::config::{Config, StorageEngine, DEFAULT_ADMIN_SOCKET};

/// `status` exit status when the store cannot be reached (LSB "not running").
const NOT_RUNNING: u8 = 3;

/// Said before and after a backup with `--include-keys`.
const KEYS_WARNING: &str =
    "flow-store backup: WARNING: --include-keys: this backup holds PRIVATE KEYS \
(every store's receiver key, the TLS private key) and the configuration. Anyone who reads it can \
decrypt the platform's traffic to this store and impersonate it. Keep it offline or encrypted, \
readable by root only, and never beside ordinary backups.";

/// The configuration, if there is one to read; an explicit `--config` that
/// cannot be read is an error.
fn load(admin: &AdminArgs) -> Result<Option<Config>, String> {
    let path = config_path(admin.config.clone());
    match crate::admin::load_config(&path, &[]) {
        Ok(config) => Ok(Some(config)),
        Err(e) if admin.config.is_some() => Err(format!("{}: {e}", path.display())),
        // The default file may be missing or unreadable to a member of the
        // group: the default socket (or --socket) is then the one to try.
        Err(_) => Ok(None),
    }
}

fn socket_of(admin: &AdminArgs, config: Option<&Config>) -> Result<PathBuf, String> {
    if let Some(socket) = &admin.socket {
        return Ok(socket.clone());
    }
    match config {
        Some(c) => c.admin.socket().map(Path::to_path_buf).ok_or_else(|| {
            "admin.socket is \"\" in the configuration: the store has no admin channel; set it and restart the store".to_string()
        }),
        None => Ok(PathBuf::from(DEFAULT_ADMIN_SOCKET)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))
}

fn fail(command: &str, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("flow-store {command}: {message}");
    ExitCode::from(1)
}

/// `flow-store status [--json]`.
pub fn status(admin: &AdminArgs, json: bool) -> ExitCode {
    let socket = match load(admin).and_then(|c| socket_of(admin, c.as_ref())) {
        Ok(s) => s,
        Err(e) => return fail("status", e),
    };
    let fetched = runtime().and_then(|rt| {
        rt.block_on(crate::admin::status::fetch(&socket))
            .map_err(|e| e.to_string())
    });
    let status = match fetched {
        Ok(status) => status,
        Err(e) => {
            eprintln!("flow-store status: {e}");
            return ExitCode::from(NOT_RUNNING);
        }
    };
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
    } else {
        out!("{}", crate::admin::status::render(&status));
    }
    if status.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `flow-store backup verify FILE`.
pub fn verify(file: &Path) -> ExitCode {
    match backup::verify(file, None) {
        Ok(verified) => {
            outln!("{}: OK: {}", file.display(), verified.describe());
            ExitCode::SUCCESS
        }
        Err(e) => fail("backup verify", e),
    }
}

/// `flow-store backup [--output FILE|-] [--dir DIR [--prune]]`.
pub fn backup(
    admin: &AdminArgs,
    output: Option<PathBuf>,
    dir: Option<PathBuf>,
    prune: bool,
    include_keys: bool,
) -> ExitCode {
    let config = match load(admin) {
        Ok(c) => c,
        Err(e) => return fail("backup", e),
    };
    let socket = match socket_of(admin, config.as_ref()) {
        Ok(s) => s,
        Err(e) => return fail("backup", e),
    };
    let name = backup::default_name(time::OffsetDateTime::now_utc());
    let output = match (output, &dir) {
        (Some(path), _) if path.as_os_str() == "-" => Output::Stdout,
        (Some(path), _) => Output::File(path),
        (None, Some(dir)) => Output::File(dir.join(name)),
        (None, None) => Output::File(PathBuf::from(name)),
    };
    if include_keys {
        eprintln!("{KEYS_WARNING}");
    }
    let taken = runtime().and_then(|rt| {
        rt.block_on(backup::take(&socket, &output, include_keys))
            .map_err(|e| e.to_string())
    });
    let done = match taken {
        Ok(done) => done,
        Err(e) => return fail("backup", e),
    };
    eprintln!(
        "flow-store backup: {} written and verified: {} states, {} bytes. It holds state content in plain text: keep it mode 0600, on encrypted storage.",
        done.file, done.states, done.bytes
    );
    if include_keys {
        eprintln!("{KEYS_WARNING}");
    }
    if let (true, Some(dir)) = (prune, dir) {
        let keep = config.map_or(7, |c| c.admin.backups_kept);
        if let Err(e) = prune_backups(&dir, keep as usize) {
            return fail(
                "backup",
                format!(
                    "the backup is written, but pruning {} failed: {e}",
                    dir.display()
                ),
            );
        }
    }
    ExitCode::SUCCESS
}

/// Deletes all but the newest `keep` `flow-store-*.backup` files in `dir`
/// (their names sort by time).
fn prune_backups(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("flow-store-") && n.ends_with(".backup"))
        })
        .collect();
    backups.sort();
    let excess = backups.len().saturating_sub(keep.max(1));
    for old in &backups[..excess] {
        std::fs::remove_file(old)?;
        eprintln!(
            "flow-store backup: removed the older backup {}",
            old.display()
        );
    }
    Ok(())
}

/// `flow-store restore FILE [--with-keys]`.
pub fn restore(explicit_config: Option<PathBuf>, file: &Path, with_keys: bool) -> ExitCode {
    let config_file = config_path(explicit_config.clone());
    let config = match crate::admin::load_config(&config_file, &[]) {
        Ok(c) => c,
        // A lost server: the configuration comes back with the keys.
        Err(_) if with_keys && explicit_config.is_none() && !config_file.exists() => {
            match backup::config_in(file) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return fail(
                        "restore",
                        format!("{} holds no configuration; give --config", file.display()),
                    )
                }
                Err(e) => return fail("restore", restore_advice(&e)),
            }
        }
        Err(e) => return fail("restore", format!("{}: {e}", config_file.display())),
    };
    let postgres = match config.storage.engine {
        StorageEngine::Sled => None,
        StorageEngine::Postgres => match crate::app::postgres_options(&config) {
            Ok(options) => Some(options),
            Err(e) => return fail("restore", format!("{e:#}")),
        },
    };
    let target = match &postgres {
        None => RestoreTarget::Sled {
            dir: &config.storage.path,
            cache_bytes: config.storage.cache_capacity_bytes,
        },
        Some(options) => RestoreTarget::Postgres(options),
    };
    let restored = runtime().map_err(|e| e.to_string()).and_then(|rt| {
        backup::restore(&rt, file, target, config.admin.socket(), with_keys)
            .map_err(|e| restore_advice(&e))
    });
    match restored {
        Ok(verified) => {
            let into = match &postgres {
                None => config.storage.path.display().to_string(),
                Some(_) => "the PostgreSQL database (storage.postgres.url)".to_string(),
            };
            outln!(
                "restored {} states into {into}: {}",
                verified.end.states,
                verified.describe()
            );
            for path in &verified.files_restored {
                outln!("restored {}", path.display());
            }
            if verified.header.includes_keys && !with_keys {
                outln!("the backup also holds configuration, TLS and key files; --with-keys restores them");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail("restore", e),
    }
}

fn restore_advice(error: &BackupError) -> String {
    match error {
        BackupError::Format { .. } => format!("{error}; nothing was written"),
        _ => error.to_string(),
    }
}
