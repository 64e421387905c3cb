//! `flow-store keys import` and `flow-store keys list`: getting a store's
//! keys from the platform's answer into the key directory and the config,
//! and showing which keys are configured.
//!
//! Import takes the JSON the platform answers to `POST api/admin/1/stores`,
//! checks both keys with [`crate::keys::check_jwk`], writes
//! `keys/<store-id>-platform.jwk` (0640) and `keys/<store-id>-receiver.jwk`
//! (0600) next to the config file, and appends a `[[stores]]` table to it.
//! The existing text is kept byte for byte: the table is appended as text
//! (rendered and escaped by `toml_edit`), and the result is parsed again,
//! both by `toml_edit` and by [`Config::load_with_env`], before it replaces
//! the file atomically. Nothing is ever overwritten, and a failure after the
//! key files were written removes them again. Neither command ever prints
//! key material: only kids and file names.

use std::fs;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table};
use uuid::Uuid;

use crate::admin::{load_config, running_as_root, ServiceAccount, SERVICE_USER};
use crate::cli::output::{out, outln};
use crate::config::{Config, ConfigError, KeySource};
use crate::keys::{check_jwk, load_key, CheckedJwk, KeyError, KeyRole};

/// Mode of the platform key file: root-owned, readable by the service group.
pub const PLATFORM_KEY_MODE: u32 = 0o640;
/// Mode of the receiver key file: readable by its owner only.
pub const RECEIVER_KEY_MODE: u32 = 0o600;
/// Mode of a `keys/` directory the import creates.
pub const KEY_DIR_MODE: u32 = 0o750;

/// Why an import was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The configuration file does not exist.
    #[error(
        "configuration file {0} does not exist: install the flow-store package (it ships one), \
         create it, or pass --config PATH"
    )]
    ConfigMissing(PathBuf),
    /// The configuration cannot be read or parsed.
    #[error("{path}: {problem}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The platform's answer is not what `POST api/admin/1/stores` returns.
    #[error("the store JSON {0}")]
    Input(String),
    /// Key files with these names already exist.
    #[error(
        "refusing to overwrite existing key file(s) {}: was this store imported already? \
         (`flow-store keys list`)",
        .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    KeyFilesExist(Vec<PathBuf>),
    /// A configured store already uses one of the kids.
    #[error("the {role} kid {kid} is already configured, by store {store:?} ({file}): this store was imported already")]
    DuplicateKid {
        /// Which of the new keys.
        role: KeyRole,
        /// The kid.
        kid: String,
        /// The configured store that has it.
        store: String,
        /// Where that store's key is.
        file: String,
    },
    /// A configured key cannot be read, so its kid cannot be compared.
    #[error("cannot compare kids with the configured stores: {0} (fix or remove that store first; `flow-store check`)")]
    ExistingKey(KeyError),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl ImportError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImportError {
        let what = what.into();
        move |source| ImportError::Io { what, source }
    }

    /// 2 when the configuration is missing or broken, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::ConfigMissing(_) | Self::Config { .. } => 2,
            _ => 1,
        }
    }
}

/// One key of the platform's answer, checked.
#[derive(Debug)]
struct ImportedKey {
    /// The text to write to the key file.
    text: String,
    checked: CheckedJwk,
    /// A private part the platform key carried and that was left out.
    dropped_private: bool,
}

/// The platform's answer to `POST api/admin/1/stores`, checked.
#[derive(Debug)]
pub struct StoreResponse {
    /// The store's id.
    pub id: Uuid,
    /// The store's name on the platform.
    pub name: String,
    /// The endpoint the platform will call, if given.
    pub endpoint: Option<String>,
    platform: ImportedKey,
    receiver: ImportedKey,
}

impl StoreResponse {
    /// Parses and checks the answer: `id` a UUID, `name` a non-empty string,
    /// `platformKey` a P-384 JWK with a kid and `receiverKey` one with its
    /// private part, each given as a JSON string or as an object. Messages
    /// never quote the input.
    pub fn parse(text: &str) -> Result<StoreResponse, ImportError> {
        let input = |m: String| ImportError::Input(m);
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            input(format!(
                "is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let obj = value.as_object().ok_or_else(|| {
            input(
                "is not a JSON object: expected the platform's answer to POST api/admin/1/stores"
                    .into(),
            )
        })?;
        let string = |name: &str| -> Result<String, ImportError> {
            obj.get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| input(format!("has no \"{name}\" string")))
        };
        let id_text = string("id")?;
        let id = Uuid::try_parse(&id_text)
            .map_err(|_| input(format!("\"id\" {id_text:?} is not a UUID")))?;
        let name = string("name")?;
        let endpoint = obj
            .get("endpoint")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string);
        let key = |member: &str, role: KeyRole| -> Result<ImportedKey, ImportError> {
            let text = match obj.get(member) {
                Some(serde_json::Value::String(s)) => s.trim().to_string(),
                Some(v @ serde_json::Value::Object(_)) => v.to_string(),
                Some(_) => {
                    return Err(input(format!(
                        "\"{member}\" is neither a JWK object nor a JSON string holding one"
                    )))
                }
                None => return Err(input(format!("has no \"{member}\""))),
            };
            let checked =
                check_jwk(&text, role).map_err(|p| input(format!("\"{member}\": {p}")))?;
            // The store needs only the platform key's public half: never
            // write a private part it has no use for.
            let dropped_private = role == KeyRole::Platform
                && serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .is_some_and(|v| v.get("d").is_some());
            let text = if dropped_private {
                checked.public.to_string()
            } else {
                text
            };
            Ok(ImportedKey {
                text,
                checked,
                dropped_private,
            })
        };
        let platform = key("platformKey", KeyRole::Platform)?;
        let receiver = key("receiverKey", KeyRole::Receiver)?;
        Ok(StoreResponse {
            id,
            name,
            endpoint,
            platform,
            receiver,
        })
    }

    /// The platform key's kid.
    pub fn platform_kid(&self) -> &str {
        &self.platform.checked.kid
    }

    /// The receiver key's kid.
    pub fn receiver_kid(&self) -> &str {
        &self.receiver.checked.kid
    }
}

/// Who the written files belong to; `None` keeps the importing user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ownership {
    /// uid:gid for the platform key and a created `keys/` directory.
    pub shared: Option<(u32, u32)>,
    /// uid:gid for the receiver key.
    pub receiver: Option<(u32, u32)>,
}

impl Ownership {
    /// Run as root with a `flow-store` group: the platform key and a new
    /// `keys/` directory go to root:flow-store, the receiver key to
    /// flow-store:flow-store (so the service user, and only it, reads it).
    pub fn for_service() -> Ownership {
        if !running_as_root() {
            return Ownership::default();
        }
        let Some(account) = ServiceAccount::lookup() else {
            return Ownership::default();
        };
        Self::from_account(&account)
    }

    fn from_account(account: &ServiceAccount) -> Ownership {
        let Some(gid) = account.gid else {
            return Ownership::default();
        };
        Ownership {
            shared: Some((0, gid)),
            receiver: account.uid.map(|uid| (uid, gid)),
        }
    }
}

/// What an import wrote.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The configuration file that got the new `[[stores]]` table.
    pub config: PathBuf,
    /// The store's name.
    pub name: String,
    /// The store's id.
    pub id: Uuid,
    /// The platform key file and its kid.
    pub platform: (PathBuf, String),
    /// The receiver key file and its kid.
    pub receiver: (PathBuf, String),
    /// Owners given to the files.
    pub ownership: Ownership,
    /// Whether the platform key's private part was left out.
    pub dropped_platform_private: bool,
}

impl Imported {
    /// What was written and what to do next, for the operator.
    pub fn summary(&self) -> String {
        let owner = |o: Option<(u32, u32)>, fallback: &str| match o {
            Some((0, _)) => format!("root:{SERVICE_USER}"),
            Some(_) => format!("{SERVICE_USER}:{SERVICE_USER}"),
            None => fallback.to_string(),
        };
        let mut out = format!(
            "wrote {} (platform key, kid {}, mode {:04o}, owner {})\n",
            self.platform.0.display(),
            self.platform.1,
            PLATFORM_KEY_MODE,
            owner(self.ownership.shared, "unchanged"),
        );
        if self.dropped_platform_private {
            out.push_str("      (the platform key's private part was left out: the store needs only its public part)\n");
        }
        out.push_str(&format!(
            "wrote {} (receiver key, kid {}, mode {:04o}, owner {})\n",
            self.receiver.0.display(),
            self.receiver.1,
            RECEIVER_KEY_MODE,
            owner(self.ownership.receiver, "unchanged"),
        ));
        if self.ownership.shared.is_some() && self.ownership.receiver.is_none() {
            out.push_str(&format!(
                "warning: there is no {SERVICE_USER} user to give the receiver key to; \
                 `chown` it to the user the store runs as\n"
            ));
        }
        out.push_str(&format!(
            "added [[stores]] name = {:?} (store {}) to {}\n",
            self.name,
            self.id,
            self.config.display()
        ));
        out.push_str(
            "The platform shows the receiver key only once: back up the receiver key file.\n\
             next: flow-store check && systemctl restart flow-store\n",
        );
        out
    }
}

/// `flow-store keys import`: reads the platform's answer from `file` (or
/// standard input for `-` or no file), imports it and prints the summary.
pub fn import_command(config_path: &Path, file: Option<&Path>) -> ExitCode {
    let input = match read_input(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("flow-store keys import: {e:#}");
            return ExitCode::from(1);
        }
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    match import(config_path, &input, &env, Ownership::for_service()) {
        Ok(imported) => {
            out!("{}", imported.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flow-store keys import: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn read_input(file: Option<&Path>) -> anyhow::Result<String> {
    use anyhow::Context;
    match file {
        Some(path) if path != Path::new("-") => fs::read_to_string(path)
            .with_context(|| format!("reading the store JSON {}", path.display())),
        _ => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("reading the store JSON from standard input (end with Ctrl-D)");
            }
            let mut text = String::new();
            stdin
                .lock()
                .read_to_string(&mut text)
                .context("reading the store JSON from standard input")?;
            Ok(text)
        }
    }
}

/// Imports the store described by `input` (the platform's JSON) into the
/// configuration at `config_path`, layered with `env` like `serve` does.
pub fn import(
    config_path: &Path,
    input: &str,
    env: &[(String, String)],
    ownership: Ownership,
) -> Result<Imported, ImportError> {
    let store = StoreResponse::parse(input)?;
    if !config_path.is_file() {
        return Err(ImportError::ConfigMissing(config_path.to_path_buf()));
    }
    // Write to the file a symlink points at, not over the link.
    let config_path = fs::canonicalize(config_path).map_err(ImportError::io(format!(
        "resolving {}",
        config_path.display()
    )))?;
    let config_error = |problem: String| ImportError::Config {
        path: config_path.clone(),
        problem,
    };
    let original = fs::read_to_string(&config_path).map_err(ImportError::io(format!(
        "reading {}",
        config_path.display()
    )))?;
    let config = Config::load_with_env(&config_path, env).map_err(|e| {
        config_error(format!(
            "{e} (fix the configuration first; `flow-store check` shows every problem)"
        ))
    })?;
    refuse_duplicate_kids(&config, &store)?;
    let appended = append_store(&original, &store).map_err(config_error)?;

    let dir = config_path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let keys_dir = dir.join("keys");
    let id = store.id.hyphenated().to_string();
    let platform_path = keys_dir.join(format!("{id}-platform.jwk"));
    let receiver_path = keys_dir.join(format!("{id}-receiver.jwk"));
    let existing: Vec<PathBuf> = [&platform_path, &receiver_path]
        .into_iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .cloned()
        .collect();
    if !existing.is_empty() {
        return Err(ImportError::KeyFilesExist(existing));
    }

    let mut written = Rollback::default();
    if !keys_dir.exists() {
        fs::DirBuilder::new()
            .mode(KEY_DIR_MODE)
            .create(&keys_dir)
            .map_err(ImportError::io(format!("creating {}", keys_dir.display())))?;
        written.dir = Some(keys_dir.clone());
        set_mode_and_owner(&keys_dir, KEY_DIR_MODE, ownership.shared)?;
    }
    write_key_file(&platform_path, &store.platform.text, PLATFORM_KEY_MODE)
        .inspect(|()| written.files.push(platform_path.clone()))?;
    set_mode_and_owner(&platform_path, PLATFORM_KEY_MODE, ownership.shared)?;
    write_key_file(&receiver_path, &store.receiver.text, RECEIVER_KEY_MODE)
        .inspect(|()| written.files.push(receiver_path.clone()))?;
    set_mode_and_owner(&receiver_path, RECEIVER_KEY_MODE, ownership.receiver)?;

    replace_config(&config_path, &appended, env, config.stores.len() + 1)?;
    written.keep();
    Ok(Imported {
        config: config_path,
        name: store.name.clone(),
        id: store.id,
        platform: (platform_path, store.platform_kid().to_string()),
        receiver: (receiver_path, store.receiver_kid().to_string()),
        ownership,
        dropped_platform_private: store.platform.dropped_private,
    })
}

fn refuse_duplicate_kids(config: &Config, store: &StoreResponse) -> Result<(), ImportError> {
    let new = [
        (KeyRole::Platform, store.platform_kid()),
        (KeyRole::Receiver, store.receiver_kid()),
    ];
    for existing in &config.stores {
        for source in [&existing.platform_key, &existing.receiver_key] {
            // Only the kid is needed: the platform role asks for no private
            // part, and no permission check (that is `check`'s job).
            let kid = load_key(source, KeyRole::Platform)
                .map_err(ImportError::ExistingKey)?
                .kid;
            // Kids are UUIDs the platform draws per key: a clash in either
            // role means these keys were imported before.
            if let Some((role, _)) = new.iter().find(|(_, k)| *k == kid) {
                return Err(ImportError::DuplicateKid {
                    role: *role,
                    kid,
                    store: existing.name.clone(),
                    file: source.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The configuration text with the new `[[stores]]` table appended; the
/// original bytes stay as they are.
fn append_store(original: &str, store: &StoreResponse) -> Result<String, String> {
    let doc: DocumentMut = original
        .parse()
        .map_err(|e: toml_edit::TomlError| format!("is not valid TOML: {e}"))?;
    match doc.get("stores") {
        None | Some(Item::ArrayOfTables(_)) => {}
        Some(_) => {
            return Err(
                "`stores` is not written as [[stores]] tables; add this store by hand".into(),
            )
        }
    }
    let id = store.id.hyphenated().to_string();
    let mut table = Table::new();
    table.insert("name", toml_edit::value(store.name.as_str()));
    table.insert(
        "platform_key",
        toml_edit::value(format!("keys/{id}-platform.jwk")),
    );
    table.insert(
        "receiver_key",
        toml_edit::value(format!("keys/{id}-receiver.jwk")),
    );
    let mut stores = ArrayOfTables::new();
    stores.push(table);
    let mut addition = DocumentMut::new();
    addition.insert("stores", Item::ArrayOfTables(stores));

    let mut text = original.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    // Where the table came from, for the operator reading the file later.
    // Control characters are dropped so the endpoint cannot break the comment.
    let endpoint: String = store
        .endpoint
        .as_deref()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    text.push_str(&format!(
        "# Imported by `flow-store keys import`: store {id}"
    ));
    if !endpoint.is_empty() {
        text.push_str(&format!(", endpoint {endpoint}"));
    }
    text.push('\n');
    text.push_str(&addition.to_string());
    let reparsed: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| format!("appending the store broke the file: {e}"))?;
    let before = doc
        .get("stores")
        .and_then(Item::as_array_of_tables)
        .map_or(0, ArrayOfTables::len);
    let after = reparsed
        .get("stores")
        .and_then(Item::as_array_of_tables)
        .map_or(0, ArrayOfTables::len);
    if after != before + 1 {
        return Err("appending the store did not add a [[stores]] table".into());
    }
    Ok(text)
}

/// Creates `path` with `mode` and exactly `bytes`, flushed to disk; fails
/// if it exists.
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// [`write_new_file`] for a key file: an existing file is a refusal, not an
/// I/O error.
fn write_key_file(path: &Path, text: &str, mode: u32) -> Result<(), ImportError> {
    write_new_file(path, format!("{text}\n").as_bytes(), mode).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            ImportError::KeyFilesExist(vec![path.to_path_buf()])
        } else {
            ImportError::Io {
                what: format!("writing {}", path.display()),
                source: e,
            }
        }
    })
}

/// Sets the exact mode (the umask may have narrowed it) and the owner.
fn set_mode_and_owner(
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), ImportError> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(ImportError::io(format!(
            "changing the owner of {}",
            path.display()
        )))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(ImportError::io(format!(
        "setting the mode of {}",
        path.display()
    )))
}

/// Replaces the configuration with `text` atomically: a temporary file in
/// the same directory, with the original's mode and owner, checked to load
/// with `expected_stores` stores, then renamed over it.
fn replace_config(
    path: &Path,
    text: &str,
    env: &[(String, String)],
    expected_stores: usize,
) -> Result<(), ImportError> {
    let meta =
        fs::metadata(path).map_err(ImportError::io(format!("reading {}", path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.toml".into());
    // Same directory, so relative paths resolve alike and rename is atomic.
    let tmp = dir.join(format!(".{file_name}.import-{}", std::process::id()));
    let mut created = false;
    let result = (|| {
        let mode = meta.permissions().mode() & 0o7777;
        write_new_file(&tmp, text.as_bytes(), mode)
            .map_err(ImportError::io(format!("writing {}", tmp.display())))?;
        created = true;
        let tmp_meta =
            fs::metadata(&tmp).map_err(ImportError::io(format!("reading {}", tmp.display())))?;
        let owner = (meta.uid(), meta.gid());
        if (tmp_meta.uid(), tmp_meta.gid()) != owner {
            set_mode_and_owner(&tmp, mode, Some(owner))?;
        } else {
            set_mode_and_owner(&tmp, mode, None)?;
        }
        let loaded = Config::load_with_env(&tmp, env).map_err(|e| ImportError::Config {
            path: path.to_path_buf(),
            problem: format!("the configuration with the new store does not load: {e}"),
        })?;
        if loaded.stores.len() != expected_stores {
            return Err(ImportError::Config {
                path: path.to_path_buf(),
                problem: "the configuration with the new store does not list it".into(),
            });
        }
        fs::rename(&tmp, path).map_err(ImportError::io(format!(
            "replacing {} with {}",
            path.display(),
            tmp.display()
        )))
    })();
    if result.is_err() && created {
        let _ = fs::remove_file(&tmp);
    } else if let Ok(d) = fs::File::open(dir) {
        // Make the rename durable; a failure here loses nothing written.
        let _ = d.sync_all();
    }
    result
}

/// Files and a directory an import created, removed again unless the
/// import succeeds.
#[derive(Default)]
struct Rollback {
    files: Vec<PathBuf>,
    dir: Option<PathBuf>,
}

impl Rollback {
    fn keep(mut self) {
        self.files.clear();
        self.dir = None;
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = fs::remove_file(file);
        }
        if let Some(dir) = &self.dir {
            // Only if empty: it may hold keys someone else put there meanwhile.
            let _ = fs::remove_dir(dir);
        }
    }
}

/// One key of a configured store, as `keys list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedKey {
    /// The file (or "an inline key from the environment").
    pub source: String,
    /// The kid, or why the key cannot be used.
    pub kid: Result<String, String>,
}

/// One configured store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedStore {
    /// The store's name.
    pub name: String,
    /// Its platform key.
    pub platform: ListedKey,
    /// Its receiver key.
    pub receiver: ListedKey,
}

impl ListedStore {
    /// Whether both keys are usable.
    pub fn ok(&self) -> bool {
        self.platform.kid.is_ok() && self.receiver.kid.is_ok()
    }
}

/// The stores configured in `config_path`, each key loaded and checked as
/// `serve` would (including the receiver key file's permissions).
pub fn list(config_path: &Path, env: &[(String, String)]) -> Result<Vec<ListedStore>, ConfigError> {
    let config = load_config(config_path, env)?;
    let listed = |source: &KeySource, role: KeyRole| ListedKey {
        source: source.to_string(),
        kid: load_key(source, role).map(|k| k.kid).map_err(|e| e.problem),
    };
    Ok(config
        .stores
        .iter()
        .map(|store| ListedStore {
            name: store.name.clone(),
            platform: listed(&store.platform_key, KeyRole::Platform),
            receiver: listed(&store.receiver_key, KeyRole::Receiver),
        })
        .collect())
}

/// One line per store: name, each key's kid and file (or its problem).
pub fn render_list(stores: &[ListedStore]) -> String {
    let key = |role: &str, k: &ListedKey| match &k.kid {
        Ok(kid) => format!("{role} kid {kid} in {}", k.source),
        Err(problem) => format!("{role} key ERROR {}: {problem}", k.source),
    };
    stores
        .iter()
        .map(|s| {
            format!(
                "store {:?}: {}; {}\n",
                s.name,
                key("platform", &s.platform),
                key("receiver", &s.receiver)
            )
        })
        .collect()
}

/// `flow-store keys list`: prints the stores; exits 1 if a key is unusable,
/// 2 if the configuration cannot be loaded.
pub fn list_command(config_path: &Path) -> ExitCode {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let stores = match list(config_path, &env) {
        Ok(stores) => stores,
        Err(e) => {
            match e {
                ConfigError::Missing(_) => eprintln!("flow-store keys list: {e}"),
                _ => eprintln!("flow-store keys list: {}: {e}", config_path.display()),
            }
            return ExitCode::from(2);
        }
    };
    if stores.is_empty() {
        outln!(
            "no stores configured in {}: import one with `flow-store keys import store.json`",
            config_path.display()
        );
        return ExitCode::SUCCESS;
    }
    out!("{}", render_list(&stores));
    let broken: Vec<&str> = stores
        .iter()
        .filter(|s| !s.ok())
        .map(|s| s.name.as_str())
        .collect();
    if broken.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "flow-store keys list: unusable keys in store(s) {}",
            broken
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_p384_jwk;
    use josekit::jwk::Jwk;
    use serde_json::json;

    const CONFIG: &str = "# flow-store test configuration\n\
        # keep this comment\n\
        [server]\n\
        listen = \"0.0.0.0:8443\"   # trailing comment\n\
        \n\
        [log]\n\
        #level = \"info\"\n\
        \n\
        # One [[stores]] table per store.\n\
        #[[stores]]\n\
        #name = \"production\"";

    fn public_of(jwk: &Jwk) -> Jwk {
        crate::keys::public_jwk(jwk).unwrap()
    }

    struct Keys {
        platform: Jwk,
        receiver: Jwk,
    }

    fn keys() -> Keys {
        Keys {
            platform: generate_p384_jwk().unwrap(),
            receiver: generate_p384_jwk().unwrap(),
        }
    }

    /// The platform's answer, keys as JSON strings like the platform sends them.
    fn answer(id: &str, keys: &Keys) -> String {
        json!({
            "id": id,
            "name": "production \"eu\"",
            "endpoint": "https://store.example.com/api/storage/1",
            "platformKey": public_of(&keys.platform).to_string(),
            "receiverKey": keys.receiver.to_string(),
        })
        .to_string()
    }

    fn config_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        fs::write(&path, CONFIG).unwrap();
        (dir, path)
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    const ID: &str = "0b7f3c2e-5d4a-4b8e-9f1a-2c3d4e5f6a7b";

    #[test]
    fn import_writes_keys_and_appends_the_store() {
        let (dir, path) = config_dir();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let keys = keys();
        let imported = import(&path, &answer(ID, &keys), &[], Ownership::default()).unwrap();

        let platform = dir.path().join(format!("keys/{ID}-platform.jwk"));
        let receiver = dir.path().join(format!("keys/{ID}-receiver.jwk"));
        assert_eq!(mode(&platform), 0o640);
        assert_eq!(mode(&receiver), 0o600);
        assert_eq!(mode(&dir.path().join("keys")), 0o750);
        assert_eq!(mode(&path), 0o640, "the config keeps its mode");
        assert_eq!(imported.platform.1, keys.platform.key_id().unwrap());
        assert_eq!(imported.receiver.1, keys.receiver.key_id().unwrap());
        // The files hold usable keys: the receiver with "d", the platform without.
        let p = fs::read_to_string(&platform).unwrap();
        let r = fs::read_to_string(&receiver).unwrap();
        assert!(check_jwk(&p, KeyRole::Platform).is_ok() && !p.contains("\"d\""));
        assert!(check_jwk(&r, KeyRole::Receiver).is_ok());

        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(CONFIG),
            "the original text is kept byte for byte:\n{text}"
        );
        assert!(text.contains("# keep this comment\n"));
        assert!(text.contains("listen = \"0.0.0.0:8443\"   # trailing comment\n"));
        assert!(
            text.ends_with(&format!(
            "[[stores]]\nname = 'production \"eu\"'\nplatform_key = \"keys/{ID}-platform.jwk\"\n\
             receiver_key = \"keys/{ID}-receiver.jwk\"\n"
        )),
            "{text}"
        );
        // And the result is a configuration serve accepts.
        let config = Config::load_with_env(&path, &[]).unwrap();
        config.validate().unwrap();
        assert_eq!(config.stores[0].name, "production \"eu\"");
        crate::keys::KeyRing::load(&config.stores).unwrap();

        let summary = imported.summary();
        assert!(
            summary.contains(&imported.receiver.1)
                && summary.contains("systemctl restart flow-store")
        );
        assert!(!summary.contains("\"d\""));
        assert!(fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".import-")));
    }

    #[test]
    fn keys_as_objects_are_accepted_and_a_platform_private_part_is_dropped() {
        let (dir, path) = config_dir();
        let keys = keys();
        let input = json!({
            "id": ID,
            "name": "objects",
            "endpoint": "https://x\nnewline",
            "platformKey": serde_json::from_str::<serde_json::Value>(&keys.platform.to_string()).unwrap(),
            "receiverKey": serde_json::from_str::<serde_json::Value>(&keys.receiver.to_string()).unwrap(),
        })
        .to_string();
        let imported = import(&path, &input, &[], Ownership::default()).unwrap();
        assert!(imported.dropped_platform_private);
        let p = fs::read_to_string(dir.path().join(format!("keys/{ID}-platform.jwk"))).unwrap();
        assert!(!p.contains("\"d\""), "{p}");
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("endpoint https://xnewline\n"), "{text}");
        Config::load_with_env(&path, &[])
            .unwrap()
            .validate()
            .unwrap();
    }

    #[test]
    fn existing_key_files_are_not_overwritten() {
        let (dir, path) = config_dir();
        fs::create_dir(dir.path().join("keys")).unwrap();
        let receiver = dir.path().join(format!("keys/{ID}-receiver.jwk"));
        fs::write(&receiver, "precious").unwrap();
        let err = import(&path, &answer(ID, &keys()), &[], Ownership::default()).unwrap_err();
        assert!(
            matches!(&err, ImportError::KeyFilesExist(files) if files == &vec![receiver.clone()]),
            "{err}"
        );
        assert!(err.to_string().contains(&receiver.display().to_string()));
        assert_eq!(fs::read_to_string(&receiver).unwrap(), "precious");
        assert!(!dir.path().join(format!("keys/{ID}-platform.jwk")).exists());
        assert_eq!(fs::read_to_string(&path).unwrap(), CONFIG);
    }

    #[test]
    fn an_already_configured_kid_is_refused() {
        let (dir, path) = config_dir();
        let keys = keys();
        import(&path, &answer(ID, &keys), &[], Ownership::default()).unwrap();
        let after_first = fs::read_to_string(&path).unwrap();
        // The same keys under another store id: the files differ, the kids clash.
        let other = "11111111-2222-4333-8444-555555555555";
        let err = import(&path, &answer(other, &keys), &[], Ownership::default()).unwrap_err();
        assert!(matches!(err, ImportError::DuplicateKid { .. }), "{err}");
        assert!(
            err.to_string().contains(keys.platform.key_id().unwrap()),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), after_first);
        assert!(!dir
            .path()
            .join(format!("keys/{other}-platform.jwk"))
            .exists());
        // The same answer again: the key files exist.
        let err = import(&path, &answer(ID, &keys), &[], Ownership::default()).unwrap_err();
        assert!(
            matches!(
                err,
                ImportError::DuplicateKid { .. } | ImportError::KeyFilesExist(_)
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_keys_and_ids_are_refused_without_quoting_them() {
        let (dir, path) = config_dir();
        let keys = keys();
        let mut bad = serde_json::from_str::<serde_json::Value>(&answer(ID, &keys)).unwrap();
        // A receiver key without its private part.
        bad["receiverKey"] = json!(public_of(&keys.receiver).to_string());
        let err = import(&path, &bad.to_string(), &[], Ownership::default()).unwrap_err();
        assert!(
            matches!(err, ImportError::Input(_)) && err.to_string().contains("private part"),
            "{err}"
        );
        // A P-256 key.
        let mut p256 = josekit::jws::ES256
            .generate_key_pair()
            .unwrap()
            .to_jwk_key_pair();
        p256.set_key_id("p256");
        let mut bad = serde_json::from_str::<serde_json::Value>(&answer(ID, &keys)).unwrap();
        bad["receiverKey"] = json!(p256.to_string());
        let err = import(&path, &bad.to_string(), &[], Ownership::default()).unwrap_err();
        assert!(err.to_string().contains("P-384"), "{err}");
        // An id that is not a UUID (and would be a path).
        let err = import(
            &path,
            &answer("../../etc/x", &keys),
            &[],
            Ownership::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a UUID"), "{err}");
        // Broken JSON: the message gives a position, not the text.
        let secret = keys
            .receiver
            .parameter("d")
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        let err = import(
            &path,
            &format!("{{\"receiverKey\": \"{secret}"),
            &[],
            Ownership::default(),
        )
        .unwrap_err();
        assert!(!err.to_string().contains(&secret), "{err}");
        assert!(!dir.path().join("keys").exists(), "nothing written");
        assert_eq!(fs::read_to_string(&path).unwrap(), CONFIG);
    }

    #[test]
    fn a_missing_or_broken_config_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let err = import(&path, &answer(ID, &keys()), &[], Ownership::default()).unwrap_err();
        assert!(
            matches!(err, ImportError::ConfigMissing(_)) && err.exit_code() == 2,
            "{err}"
        );
        fs::write(&path, "[server]\nlsiten = 1\n").unwrap();
        let err = import(&path, &answer(ID, &keys()), &[], Ownership::default()).unwrap_err();
        assert!(err.to_string().contains("lsiten"), "{err}");
        assert!(!dir.path().join("keys").exists());
    }

    #[test]
    fn a_failure_after_writing_keys_removes_them() {
        let (dir, path) = config_dir();
        // Something in the way of the temporary config file: the replace
        // fails after both key files were written (even for root).
        let blocker = dir
            .path()
            .join(format!(".config.toml.import-{}", std::process::id()));
        fs::create_dir(&blocker).unwrap();
        let err = import(&path, &answer(ID, &keys()), &[], Ownership::default()).unwrap_err();
        assert!(matches!(err, ImportError::Io { .. }), "{err}");
        assert!(
            !dir.path().join("keys").exists(),
            "keys and their new directory rolled back"
        );
        assert!(blocker.is_dir(), "what was not ours stays");
        assert_eq!(fs::read_to_string(&path).unwrap(), CONFIG);
    }

    #[test]
    fn rollback_removes_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("keys");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("a"), "x").unwrap();
        {
            let rollback = Rollback {
                files: vec![sub.join("a")],
                dir: Some(sub.clone()),
            };
            drop(rollback);
        }
        assert!(!sub.exists());
        fs::create_dir(&sub).unwrap();
        Rollback {
            files: vec![],
            dir: Some(sub.clone()),
        }
        .keep();
        assert!(sub.exists());
    }

    #[test]
    fn list_shows_kids_and_files_but_no_key_material() {
        let (dir, path) = config_dir();
        let keys = keys();
        import(&path, &answer(ID, &keys), &[], Ownership::default()).unwrap();
        let stores = list(&path, &[]).unwrap();
        assert_eq!(stores.len(), 1);
        assert!(stores[0].ok());
        let text = render_list(&stores);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(keys.platform.key_id().unwrap()), "{text}");
        assert!(text.contains(keys.receiver.key_id().unwrap()), "{text}");
        assert!(text.contains(&format!("{ID}-receiver.jwk")), "{text}");
        assert!(!text.contains("\"d\""), "{text}");
        let d = keys
            .receiver
            .parameter("d")
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        assert!(!text.contains(&d));
        // A receiver key readable by everyone is reported, by file.
        let receiver = dir.path().join(format!("keys/{ID}-receiver.jwk"));
        fs::set_permissions(&receiver, fs::Permissions::from_mode(0o644)).unwrap();
        let stores = list(&path, &[]).unwrap();
        assert!(!stores[0].ok());
        let text = render_list(&stores);
        assert!(
            text.contains("receiver key ERROR") && text.contains(&receiver.display().to_string()),
            "{text}"
        );
    }

    #[test]
    fn ownership_follows_the_service_account() {
        let account = ServiceAccount {
            uid: Some(998),
            gid: Some(997),
            groups: vec![997],
        };
        assert_eq!(
            Ownership::from_account(&account),
            Ownership {
                shared: Some((0, 997)),
                receiver: Some((998, 997)),
            }
        );
        let no_group = ServiceAccount {
            uid: Some(998),
            gid: None,
            groups: vec![],
        };
        assert_eq!(Ownership::from_account(&no_group), Ownership::default());
    }

    #[test]
    fn ownership_is_applied_when_running_as_root() {
        if !crate::admin::running_as_root() {
            return;
        }
        let (dir, path) = config_dir();
        // Some uid/gid that need not exist: root may give files to anyone.
        let ownership = Ownership {
            shared: Some((0, 4242)),
            receiver: Some((4243, 4242)),
        };
        import(&path, &answer(ID, &keys()), &[], ownership).unwrap();
        let owner = |p: &Path| {
            let m = fs::metadata(p).unwrap();
            (m.uid(), m.gid())
        };
        assert_eq!(owner(&dir.path().join("keys")), (0, 4242));
        assert_eq!(
            owner(&dir.path().join(format!("keys/{ID}-platform.jwk"))),
            (0, 4242)
        );
        assert_eq!(
            owner(&dir.path().join(format!("keys/{ID}-receiver.jwk"))),
            (4243, 4242)
        );
        assert_eq!(
            mode(&dir.path().join(format!("keys/{ID}-receiver.jwk"))),
            0o600
        );
    }
}
