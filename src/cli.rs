//! The command line: `serve`, `simulate`, `check`, `keys`, `migrate`,
//! `status`, `backup` and `restore`, each a thin call into the library. Exit codes: 0 success, 1 failure while running
//! (or a simulate step failed), 2 bad usage or configuration.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use uuid::Uuid;

use crate::app::{self, App};
use crate::clock::SystemClock;
use crate::config::{Config, CONFIG_ENV, DEFAULT_CONFIG_PATH};
use crate::simulate::{self, SimulateOptions};

pub mod docs;
mod operator;
pub(crate) mod output;

use output::{out, outln};

/// flow-store: keep Boomi Flow states on your own servers.
#[derive(Debug, Parser)]
#[command(name = "flow-store", version, about)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the store.
    Serve {
        /// Configuration file [default: $FLOW_STORE_CONFIG or /etc/flow-store/config.toml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Development mode: self-signed certificate, fresh keys and data in ./flow-store-dev/.
        #[arg(long, conflicts_with = "config")]
        dev: bool,
    },
    /// Play the platform against a running store: save, load, update, delete.
    Simulate {
        /// Use the files `serve --dev` wrote in ./flow-store-dev/.
        #[arg(long, conflicts_with_all = ["url", "platform_key", "receiver_key"])]
        dev: bool,
        /// Base URL of the store, e.g. https://store.example.com:8443/api/storage/1.
        #[arg(long, required_unless_present = "dev")]
        url: Option<String>,
        /// The platform key pair (JWK with "d").
        #[arg(long, value_name = "FILE", required_unless_present = "dev")]
        platform_key: Option<PathBuf>,
        /// The receiver key (JWK; the public part is enough).
        #[arg(long, value_name = "FILE", required_unless_present = "dev")]
        receiver_key: Option<PathBuf>,
        /// Trust this CA certificate (PEM) instead of the system's.
        #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
        ca: Option<PathBuf>,
        /// Accept any server certificate.
        #[arg(long)]
        insecure: bool,
        /// Tenant id to use [default: random].
        #[arg(long)]
        tenant: Option<Uuid>,
        /// HTTP Basic credentials as USER:PASSWORD, if the store requires them.
        #[arg(long, value_name = "USER:PASSWORD", env = "FLOW_STORE_SIMULATE_BASIC")]
        basic: Option<String>,
        /// full: the whole scenario; save: save one state and keep it;
        /// load: check that state is still there (e.g. after a restart).
        #[arg(long, value_enum, default_value_t = simulate::Mode::Full, requires_ifs = [("save", "tenant"), ("save", "state"), ("load", "tenant"), ("load", "state")])]
        mode: simulate::Mode,
        /// State id to use [default: random]; needed with --mode save|load.
        #[arg(long)]
        state: Option<Uuid>,
        /// With --mode save|load: KiB of padding in the kept state's content
        /// (the same value for both), to try large states.
        #[arg(long, value_name = "KIB", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=10240))]
        pad_kib: u16,
    },
    /// Check everything `serve` needs (config, keys, certificate, storage) without serving.
    Check {
        /// Configuration file [default: $FLOW_STORE_CONFIG or /etc/flow-store/config.toml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Copy every state from one database to another, then verify the copy.
    Migrate {
        /// Source: sled:PATH (not open by a running store), postgres:URL, or
        /// reference-postgres:URL (the `states` table of Boomi's reference store, read-only).
        #[arg(long, value_name = "ENGINE:WHERE")]
        from: crate::admin::migrate::Endpoint,
        /// Destination: sled:PATH or postgres:URL.
        #[arg(long, value_name = "ENGINE:WHERE")]
        to: crate::admin::migrate::Endpoint,
        /// File holding the source database's password.
        #[arg(long, value_name = "FILE")]
        from_password_file: Option<PathBuf>,
        /// File holding the destination database's password.
        #[arg(long, value_name = "FILE")]
        to_password_file: Option<PathBuf>,
        /// CA certificate(s) of the source database (verify-full).
        #[arg(long, value_name = "FILE")]
        from_ca: Option<PathBuf>,
        /// CA certificate(s) of the destination database (verify-full).
        #[arg(long, value_name = "FILE")]
        to_ca: Option<PathBuf>,
        /// States per page read and per destination transaction.
        #[arg(long, default_value_t = 200)]
        batch: usize,
    },
    /// Import or list the stores' keys.
    Keys {
        /// What to do with the keys.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Ask the running store how it is doing (exit status 1 when unhealthy).
    Status {
        /// Where the store is.
        #[command(flatten)]
        admin: AdminArgs,
        /// Print JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Take an online, consistent backup from the running store (or `backup verify FILE`).
    #[command(args_conflicts_with_subcommands = true)]
    Backup {
        /// Check a backup file instead of taking one.
        #[command(subcommand)]
        command: Option<BackupCommand>,
        /// Where the store is.
        #[command(flatten)]
        admin: AdminArgs,
        /// The file to write; `-` writes to standard output (unverified)
        /// [default: ./flow-store-<UTC time>.backup].
        #[arg(long, short, value_name = "FILE|-", conflicts_with = "dir")]
        output: Option<PathBuf>,
        /// Write flow-store-<UTC time>.backup into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// With --dir: then delete all but the newest `admin.backups_kept`
        /// backups there.
        #[arg(long, requires = "dir")]
        prune: bool,
        /// Also put the configuration, the TLS files and every store's key
        /// files in the backup, to rebuild a lost server: the file then
        /// holds PRIVATE KEYS.
        #[arg(long)]
        include_keys: bool,
    },
    /// Write the man pages and shell completions (for packaging).
    #[command(hide = true)]
    GenerateDocs {
        /// Directory for the man pages (section 8).
        #[arg(long, value_name = "DIR")]
        man: PathBuf,
        /// Directory for the bash, zsh and fish completions.
        #[arg(long, value_name = "DIR")]
        completions: PathBuf,
    },
    /// Restore a backup into an empty data directory while the store is stopped.
    Restore {
        /// Configuration file (its storage.path is the target) [default: $FLOW_STORE_CONFIG or /etc/flow-store/config.toml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// The backup file.
        file: PathBuf,
        /// Also put back the configuration, TLS and key files of a backup
        /// taken with --include-keys (never over existing files); with no
        /// configuration file present, the backup's own is used.
        #[arg(long)]
        with_keys: bool,
    },
}

/// How the operator commands find the running store.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Configuration file naming admin.socket [default: $FLOW_STORE_CONFIG or /etc/flow-store/config.toml].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The admin socket, instead of the configuration's admin.socket.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// `flow-store backup …`.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Re-read a backup and check its manifest, every checksum and every record.
    Verify {
        /// The backup file.
        file: PathBuf,
    },
}

/// `flow-store keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a store from the JSON the platform answered to `POST api/admin/1/stores`.
    Import {
        /// Configuration file [default: $FLOW_STORE_CONFIG or /etc/flow-store/config.toml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// The platform's JSON answer; `-` or nothing reads standard input.
        #[arg(value_name = "FILE|-")]
        file: Option<PathBuf>,
    },
    /// Show the configured stores, their key ids and key files (never key material).
    List {
        /// Configuration file [default: $FLOW_STORE_CONFIG or /etc/flow-store/config.toml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    output::finish(run(Cli::parse()))
}

fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config, dev } => serve(config, dev),
        Command::Simulate {
            dev,
            url,
            platform_key,
            receiver_key,
            ca,
            insecure,
            tenant,
            basic,
            mode,
            state,
            pad_kib,
        } => {
            let options = if dev {
                SimulateOptions::from_dev_dir(Path::new(crate::dev::DEV_DIR))
            } else {
                Ok(SimulateOptions {
                    url: url.unwrap_or_default(),
                    platform_key: platform_key.unwrap_or_default(),
                    receiver_key: receiver_key.unwrap_or_default(),
                    ca,
                    insecure,
                    tenant: None,
                    basic: None,
                    state: None,
                    mode,
                    pad_kib: 0,
                })
            };
            let options = options.map(|o| SimulateOptions {
                tenant,
                basic,
                state,
                mode,
                pad_kib: usize::from(pad_kib),
                ..o
            });
            run_simulate(options)
        }
        Command::Check { config } => crate::admin::check::command(&config_path(config)),
        Command::Migrate {
            from,
            to,
            from_password_file,
            to_password_file,
            from_ca,
            to_ca,
            batch,
        } => run_migrate(crate::admin::migrate::MigrateOptions {
            from,
            to,
            from_password_file,
            to_password_file,
            from_ca,
            to_ca,
            batch,
        }),
        Command::Keys { command } => match command {
            KeysCommand::Import { config, file } => {
                crate::admin::keys::import_command(&config_path(config), file.as_deref())
            }
            KeysCommand::List { config } => crate::admin::keys::list_command(&config_path(config)),
        },
        Command::Status { admin, json } => operator::status(&admin, json),
        Command::Backup {
            command: Some(BackupCommand::Verify { file }),
            ..
        } => operator::verify(&file),
        Command::Backup {
            command: None,
            admin,
            output,
            dir,
            prune,
            include_keys,
        } => operator::backup(&admin, output, dir, prune, include_keys),
        Command::Restore {
            config,
            file,
            with_keys,
        } => operator::restore(config, &file, with_keys),
        Command::GenerateDocs { man, completions } => generate_docs(&man, &completions),
    }
}

/// The configuration file to use: `--config`, `$FLOW_STORE_CONFIG`, or the default.
pub fn config_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

fn generate_docs(man: &Path, completions: &Path) -> ExitCode {
    let written = docs::man_pages(man).and_then(|mut pages| {
        pages.extend(docs::completions(completions)?);
        Ok(pages)
    });
    match written {
        Ok(files) => {
            for file in files {
                outln!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flow-store generate-docs: {e}");
            ExitCode::from(1)
        }
    }
}

fn report(error: &anyhow::Error) {
    // The whole context chain on one line, like ripgrep. Under systemd,
    // stderr goes to the journal too.
    eprintln!("flow-store: {error:#}");
}

fn serve(config: Option<PathBuf>, dev: bool) -> ExitCode {
    let path = if dev {
        match crate::dev::prepare(Path::new(crate::dev::DEV_DIR)) {
            Ok(p) => p,
            Err(e) => {
                report(&e);
                return ExitCode::from(1);
            }
        }
    } else {
        config_path(config)
    };
    let config = match Config::load(&path).and_then(|c| c.validate().map(|_| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flow-store: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    crate::logging::init(config.log_level().unwrap_or(log::LevelFilter::Info));
    log::info!(
        "flow-store {} starting with {}",
        env!("CARGO_PKG_VERSION"),
        path.display()
    );
    match run_server(&config, dev) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::from(1)
        }
    }
}

fn run_server(config: &Config, dev: bool) -> anyhow::Result<()> {
    let flavor = crate::server::runtime::Flavor::for_this_process()?;
    let runtime = crate::server::runtime::build(flavor).context("starting the async runtime")?;
    log::info!("{}", flavor.describe());
    let app = runtime.block_on(App::open(config, Arc::new(SystemClock)))?;
    let addr = config.listen_addr().context("server.listen")?;
    let api = app::bind(addr, "server.listen")?;
    let metrics = match config.metrics_addr().context("metrics.listen")? {
        Some(addr) => Some(app::bind(addr, "metrics.listen")?),
        None => None,
    };
    if dev {
        let bound = api.local_addr().context("reading the listener's address")?;
        crate::dev::write_simulate_target(
            Path::new(crate::dev::DEV_DIR),
            bound,
            &config.server.base_path,
        )?;
    }
    runtime.block_on(async move {
        let admin = config
            .admin
            .socket()
            .map(crate::admin::socket::AdminListener::bind)
            .transpose()?;
        let listeners = app::Listeners {
            admin,
            api: tokio::net::TcpListener::from_std(api).context("registering the listener")?,
            metrics: metrics
                .map(tokio::net::TcpListener::from_std)
                .transpose()
                .context("registering the metrics listener")?,
        };
        let reloads = crate::server::shutdown::hangups();
        app.run(
            listeners,
            crate::server::shutdown::terminate(),
            Some(reloads),
        )
        .await
    })
}

fn run_migrate(options: crate::admin::migrate::MigrateOptions) -> ExitCode {
    crate::logging::init(log::LevelFilter::Warn);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| {
            runtime.block_on(crate::admin::migrate::run(
                &options,
                time::OffsetDateTime::now_utc(),
            ))
        });
    match result {
        Ok(summary) => {
            out!("{}", summary.render());
            if summary.verified_ok() {
                outln!("flow-store migrate: done, the copy is verified");
                ExitCode::SUCCESS
            } else {
                outln!(
                    "flow-store migrate: {} state(s) missing or different at the destination \
                     (changed at the source during the copy?); run migrate again",
                    summary.mismatched
                );
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("flow-store migrate: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_simulate(options: anyhow::Result<SimulateOptions>) -> ExitCode {
    let result = options.and_then(|options| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        runtime.block_on(simulate::run(options))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flow-store simulate: {e:#}");
            ExitCode::from(1)
        }
    }
}
