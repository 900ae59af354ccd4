//! The `vouch` command line.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vouch_config::{load, Config, ProcessEnvironment};
use vouch_playbook::CaseId;
use vouch_storage::audit::verify_chain;
use vouch_storage::{AuditRecord, Store, StoreOptions};

use crate::ingest::{app, AppState};
use crate::metrics::Metrics;
use crate::service::Service;

#[derive(Debug, Parser)]
#[command(name = "vouch", version, about = "Triage lateral-movement alerts with your team in Discord.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Vouch: the alert API and the case store.
    Run {
        #[arg(long, env = "VOUCH_CONFIG", default_value = "vouch.toml")]
        config: PathBuf,
    },
    /// Check the settings and the directory, and list every problem found.
    CheckConfig {
        #[arg(long, env = "VOUCH_CONFIG", default_value = "vouch.toml")]
        config: PathBuf,
    },
    /// See the whole flow without a Discord server: Vouch against a simulated guild, fed
    /// sample alerts, with a transcript of the triage channel as people click.
    #[cfg(feature = "demo")]
    Demo,
    /// Check or export the tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of the store (stop Vouch first), or of an exported file.
    Verify {
        #[arg(long, env = "VOUCH_CONFIG", default_value = "vouch.toml")]
        config: PathBuf,
        /// A JSON-lines export to verify instead of the store.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Write the audit log as JSON lines (stop Vouch first).
    Export {
        #[arg(long, env = "VOUCH_CONFIG", default_value = "vouch.toml")]
        config: PathBuf,
        /// Only the records of this case (`LM-42`). The chain of a partial export cannot be verified.
        #[arg(long)]
        case: Option<String>,
        /// Where to write; standard output when absent.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let outcome = match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { config } => check_config(&config),
        #[cfg(feature = "demo")]
        Command::Demo => crate::demo::main(),
        Command::Audit { command: AuditCommand::Verify { config, file } } => audit_verify(&config, file.as_deref()),
        Command::Audit { command: AuditCommand::Export { config, case, output } } => {
            audit_export(&config, case.as_deref(), output.as_deref())
        }
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("vouch: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VOUCH_LOG").unwrap_or_else(|_| "info".into());
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colour).with_writer(std::io::stderr);
    if std::env::var("VOUCH_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Loads the configuration, printing every problem when it is not valid.
fn load_config(path: &Path) -> Option<Config> {
    match load(path, &ProcessEnvironment) {
        Ok(config) => Some(config),
        Err(error) => {
            eprintln!("vouch: {error}");
            None
        }
    }
}

fn open_store(config: &Config) -> anyhow::Result<Store> {
    let storage = &config.settings.storage;
    std::fs::create_dir_all(&storage.data_dir)
        .with_context(|| format!("cannot create the data directory {}", storage.data_dir.display()))?;
    let options = StoreOptions { cache_capacity_bytes: storage.cache_capacity_mib * 1024 * 1024 };
    Store::open(&storage.data_dir, &options).context("cannot open the store")
}

fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    match load_config(path) {
        Some(config) => {
            println!(
                "{}: valid ({} people, {} assets, playbook {} {})",
                path.display(),
                config.directory.people().count(),
                config.directory.assets().count(),
                config.playbook.name,
                config.playbook.version
            );
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(ExitCode::from(2)),
    }
}

fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let Some(config) = load_config(path) else {
        return Ok(ExitCode::from(2));
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")?;
    runtime.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

/// A running Vouch: the HTTP API, the store and (when configured) Discord.
pub struct Running {
    pub address: std::net::SocketAddr,
    pub service: Arc<Service>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    store: Arc<Store>,
    discord: Option<crate::discord::DiscordHandle>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops taking requests, lets those in flight finish, disconnects and flushes the store.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.server.await.context("the HTTP server task failed")?.context("the HTTP server failed")?;
        if let Some(discord) = self.discord {
            discord.shutdown().await;
        }
        for task in self.background {
            task.abort();
        }
        tracing::info!("shutting down: flushing the store");
        self.store.close().context("the store could not be flushed")
    }
}

/// Starts Vouch from a valid configuration.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with_clock(config, Arc::new(crate::SystemClock)).await
}

/// Starts Vouch reading time from `clock` (tests move a [`crate::ManualClock`]).
pub async fn start_with_clock(config: Config, clock: Arc<dyn crate::Clock>) -> anyhow::Result<Running> {
    let store = Arc::new(open_store(&config)?);
    let ingest = config.settings.ingest.clone();
    let service = Arc::new(Service {
        store: Arc::clone(&store),
        directory: config.directory,
        playbook: config.playbook,
        grouping_window: vouch_playbook::cases::GroupingWindow::minutes(ingest.grouping_window_minutes),
        effects_ready: Arc::new(tokio::sync::Notify::new()),
        outbox_ready: Arc::new(tokio::sync::Notify::new()),
        webhooks: config.settings.webhooks.clone(),
        clock,
        oncall: config.settings.oncall.clone(),
        timers: config.settings.timers.clone(),
        timers_ready: Arc::new(tokio::sync::Notify::new()),
    });
    let mut background = Vec::new();
    if !service.webhooks.is_empty() {
        let deliverer = crate::webhooks::Deliverer::new(
            Arc::clone(&service),
            config.settings.webhooks.clone(),
            config.settings.delivery.clone(),
        )?;
        background.push(tokio::spawn(deliverer.run()));
    }
    background.push(tokio::spawn(crate::timers::run(Arc::clone(&service))));
    background.push(tokio::spawn(keep_store_open(Arc::clone(&store))));
    let discord = match config.settings.discord.clone() {
        Some(settings) => Some(crate::discord::start(settings, Arc::clone(&service)).await?),
        None => {
            tracing::warn!("no [discord] settings: chat effects are recorded on their cases as not delivered");
            background.push(tokio::spawn(
                crate::dispatch::Dispatcher::new(Arc::clone(&service), crate::dispatch::NoChat).run(),
            ));
            None
        }
    };
    let service_handle = Arc::clone(&service);
    let state = Arc::new(AppState {
        service,
        token: ingest.token,
        signing_secrets: ingest.signing_secrets,
        max_body_bytes: ingest.max_body_bytes,
        metrics: Metrics::default(),
        seen_signatures: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind(ingest.listen)
        .await
        .with_context(|| format!("cannot listen on {}", ingest.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, data_dir = %config.settings.storage.data_dir.display(), "vouch is listening");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app(state))
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(Running { address, service: service_handle, stop, server, store, discord, background })
}

/// After a disk failure, reopens the store once a second until that works: often enough to take
/// alerts again soon after the disk has room, rarely enough not to spend the machine on a disk
/// that stays full. Requests meanwhile get 503 without waiting for it.
async fn keep_store_open(store: Arc<Store>) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if !store.is_failed() {
            continue;
        }
        let reopening = Arc::clone(&store);
        match tokio::task::spawn_blocking(move || reopening.recover()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(error = %error, "the store cannot be reopened yet"),
            Err(error) => tracing::warn!(error = %error, "the store's reopening task failed"),
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    // The first line on standard output names the bound address, so a supervisor (or a test)
    // that asked for port 0 learns the real one.
    println!("vouch: listening on {}", running.address);
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    running.stop().await
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

fn audit_verify(path: &Path, file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let report = match file {
        Some(file) => {
            let reader = std::io::BufReader::new(
                std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
            );
            let mut records = Vec::new();
            for (index, line) in reader.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let record: AuditRecord = serde_json::from_str(&line)
                    .with_context(|| format!("{}:{}: not an audit record", file.display(), index + 1))?;
                records.push(record);
            }
            verify_chain(records.iter())
        }
        None => {
            let Some(config) = load_config(path) else { return Ok(ExitCode::from(2)) };
            open_store(&config)?.verify_audit()?
        }
    };
    if report.is_intact() {
        let head = report
            .head
            .as_ref()
            .map(|head| format!("#{} {}", head.seq, head.hash))
            .unwrap_or_else(|| "empty".to_string());
        println!("audit log intact: {} records, head {head}", report.records);
        Ok(ExitCode::SUCCESS)
    } else {
        println!("audit log NOT intact ({} records checked):", report.records);
        for problem in &report.problems {
            println!("  {problem}");
        }
        Ok(ExitCode::from(3))
    }
}

fn audit_export(path: &Path, case: Option<&str>, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Some(config) = load_config(path) else { return Ok(ExitCode::from(2)) };
    let case_id = case.map(|text| text.parse::<CaseId>().map_err(anyhow::Error::msg)).transpose()?;
    let store = open_store(&config)?;
    let mut writer: Box<dyn Write> = match output {
        Some(output) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(output).with_context(|| format!("cannot write {}", output.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let records: Box<dyn Iterator<Item = vouch_storage::Result<AuditRecord>>> = match case_id {
        Some(case_id) => Box::new(store.case_audit(case_id)?.into_iter().map(Ok)),
        None => Box::new(store.audit_records()),
    };
    for record in records {
        serde_json::to_writer(&mut writer, &record?)?;
        writer.write_all(b"\n")?;
    }
    writer.flush()?;
    Ok(ExitCode::SUCCESS)
}
