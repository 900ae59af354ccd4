//! The `vouch` command line.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vouch_config::{load, Config, ProcessEnvironment};
use vouch_playbook::CaseId;
use vouch_storage::audit::verify_chain;
use vouch_storage::AuditRecord;

use crate::app::open_store;

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
    /// Export cases as JSON lines for other tools.
    Cases {
        #[command(subcommand)]
        command: CasesCommand,
    },
    /// Sync the directory from its sources, or show what Vouch believes and who said it.
    Directory {
        #[command(subcommand)]
        command: DirectoryCommand,
    },
    /// Copy a whole store into a new, empty one (sled into PostgreSQL, say) and verify the audit
    /// chain on arrival. Stop Vouch first.
    Migrate {
        /// The configuration whose store is copied.
        #[arg(long)]
        from_config: PathBuf,
        /// The configuration whose store receives the copy; it must be empty.
        #[arg(long)]
        to_config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum DirectoryCommand {
    /// Read every source (or one) now and apply the changes (stop Vouch first); with
    /// `--dry-run`, only print the changes a sync would make.
    Sync {
        #[arg(long, env = "VOUCH_CONFIG", default_value = "vouch.toml")]
        config: PathBuf,
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        dry_run: bool,
        /// Read the sources whole (an incremental read does not see deletions).
        #[arg(long)]
        full: bool,
    },
    /// What Vouch believes about a person, an account or a machine, and which source said it.
    Show {
        #[arg(long, env = "VOUCH_CONFIG", default_value = "vouch.toml")]
        config: PathBuf,
        /// A person id, an account name or a hostname.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum CasesCommand {
    /// Write the cases opened in a time range as JSON lines, newest first (stop Vouch first).
    /// Archived cases are in the archive files, not here.
    Export {
        #[arg(long, env = "VOUCH_CONFIG", default_value = "vouch.toml")]
        config: PathBuf,
        /// Opened at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Opened before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Where to write; standard output when absent.
        #[arg(long)]
        output: Option<PathBuf>,
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
        /// The archive folder (`[retention] archive_dir`): verify its files and the store end to
        /// end, every archived record in its place.
        #[arg(long, conflicts_with = "file")]
        archive: Option<PathBuf>,
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
        Command::Audit { command: AuditCommand::Verify { config, file, archive } } => {
            audit_verify(&config, file.as_deref(), archive.as_deref())
        }
        Command::Cases { command: CasesCommand::Export { config, since, until, output } } => {
            cases_export(&config, since.as_deref(), until.as_deref(), output.as_deref())
        }
        Command::Audit { command: AuditCommand::Export { config, case, output } } => {
            audit_export(&config, case.as_deref(), output.as_deref())
        }
        Command::Directory { command: DirectoryCommand::Sync { config, source, dry_run, full } } => {
            directory_sync(&config, crate::directory_sync::SyncRequest { source: source.as_deref(), dry_run, full })
        }
        Command::Directory { command: DirectoryCommand::Show { config, name } } => directory_show(&config, &name),
        Command::Migrate { from_config, to_config } => migrate(&from_config, &to_config),
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

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = crate::app::start(config).await?;
    // Listen for the signals before saying where Vouch listens: a supervisor (or a test) may
    // send SIGTERM as soon as it reads that line.
    let shutdown = shutdown_signal();
    // The first line on standard output names the bound address, so a supervisor (or a test)
    // that asked for port 0 learns the real one.
    println!("vouch: listening on {}", running.address);
    let _ = std::io::stdout().flush();
    shutdown.await;
    running.stop().await
}

/// Registers for SIGINT and SIGTERM now, and resolves on the first to come.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    let register = |kind: SignalKind| match signal(kind) {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::warn!(error = %error, "cannot listen for a shutdown signal");
            None
        }
    };
    let (interrupt, terminate) = (register(SignalKind::interrupt()), register(SignalKind::terminate()));
    async fn received(listener: Option<Signal>) {
        match listener {
            Some(mut listener) => {
                listener.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    async move {
        tokio::select! {
            () = received(interrupt) => {},
            () = received(terminate) => {},
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Copies the store of one configuration into the (empty) store of another, then verifies the
/// audit chain where it arrived and that every record did.
fn migrate(from: &Path, to: &Path) -> anyhow::Result<ExitCode> {
    let (Some(source_config), Some(target_config)) = (load_config(from), load_config(to)) else {
        return Ok(ExitCode::from(2));
    };
    let source = open_store(&source_config).context("cannot open the store to copy from")?;
    let target = open_store(&target_config).context("cannot open the store to copy into")?;
    let before = source.verify_audit()?;
    let copied = match source.copy_into(&target) {
        Ok(copied) => copied,
        Err(vouch_storage::StorageError::Conflict(reason)) => {
            eprintln!("vouch: {reason}; nothing was copied");
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => return Err(error).context("the copy failed; nothing was copied"),
    };
    let arrived = target.verify_audit()?;
    println!(
        "copied {} records ({} bytes) from {} ({}) into {} ({})",
        copied.records,
        copied.bytes,
        source_config.settings.storage.describe(),
        source.backend().name(),
        target_config.settings.storage.describe(),
        target.backend().name(),
    );
    if !arrived.problems.is_empty() || arrived.head != before.head {
        eprintln!("vouch: the audit chain does not verify where it arrived:");
        for problem in &arrived.problems {
            eprintln!("  {problem}");
        }
        return Ok(ExitCode::FAILURE);
    }
    match arrived.head {
        Some(head) => println!(
            "the audit chain verifies on arrival: {} records up to #{} ({})",
            arrived.records, head.seq, head.hash
        ),
        None => println!("the audit chain verifies on arrival: it is empty"),
    }
    target.close()?;
    Ok(ExitCode::SUCCESS)
}

fn audit_verify(path: &Path, file: Option<&Path>, archive: Option<&Path>) -> anyhow::Result<ExitCode> {
    let report = match (file, archive) {
        (_, Some(archive)) => {
            let Some(config) = load_config(path) else { return Ok(ExitCode::from(2)) };
            crate::retention::verify_with_archives(&open_store(&config)?, archive)?
        }
        (Some(file), None) => {
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
        (None, None) => {
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

fn cases_export(
    path: &Path,
    since: Option<&str>,
    until: Option<&str>,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let time = |name: &str, text: Option<&str>| -> anyhow::Result<Option<vouch_playbook::Timestamp>> {
        text.map(|text| {
            vouch_playbook::Timestamp::parse(text)
                .ok_or_else(|| anyhow::anyhow!("--{name} is a time in RFC 3339, such as 2026-12-01T00:00:00Z"))
        })
        .transpose()
    };
    let filter = vouch_playbook::case_list::CaseFilter {
        opened_from: time("since", since)?,
        opened_until: time("until", until)?,
        ..Default::default()
    };
    let Some(config) = load_config(path) else { return Ok(ExitCode::from(2)) };
    let store = open_store(&config)?;
    let mut writer: Box<dyn Write> = match output {
        Some(output) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(output).with_context(|| format!("cannot write {}", output.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    // A page at a time: whatever the history holds, only a page of it is in memory.
    let mut before = None;
    loop {
        let page = store.case_page(&filter, before, 500)?;
        for summary in &page.cases {
            serde_json::to_writer(&mut writer, &store.case(summary.id)?)?;
            writer.write_all(b"\n")?;
        }
        match page.next_before {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    writer.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The directory keeper over the store, for the `directory` commands (Vouch must be stopped:
/// the store is opened here).
fn directory_keeper(config: &Config) -> anyhow::Result<crate::directory_sync::DirectoryKeeper> {
    let store = std::sync::Arc::new(open_store(config)?);
    crate::directory_sync::DirectoryKeeper::open(config.settings.directory.clone(), store)
}

fn directory_sync(path: &Path, request: crate::directory_sync::SyncRequest<'_>) -> anyhow::Result<ExitCode> {
    let Some(config) = load_config(path) else { return Ok(ExitCode::from(2)) };
    if let Some(name) = request.source {
        if !config.settings.directory.sync.sources.iter().any(|known| known.name == name) {
            anyhow::bail!("no directory source is named `{name}`");
        }
    }
    let keeper = directory_keeper(&config)?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")?;
    let now = crate::Clock::now(&crate::SystemClock);
    let outcomes = runtime.block_on(keeper.sync(request, now));
    let mut refused = false;
    for (name, outcome) in outcomes {
        match outcome {
            crate::directory_sync::SyncOutcome::Applied(changes) => {
                println!("{name}: {} change(s) applied", changes.len());
                print_changes(&changes);
            }
            crate::directory_sync::SyncOutcome::WouldApply(changes) => {
                println!("{name}: {} change(s) a sync would make (dry run, nothing stored)", changes.len());
                print_changes(&changes);
            }
            crate::directory_sync::SyncOutcome::Refused(reason) => {
                refused = true;
                println!("{name}: refused: {reason}");
            }
        }
    }
    Ok(if refused { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The first thousand changes, one a line; a first load's hundreds of thousands are counted.
fn print_changes(changes: &vouch_config::DirectoryChanges) {
    changes.listed().iter().for_each(|change| println!("  {change}"));
    if !changes.is_complete() {
        let counts: Vec<String> = changes.by_kind().iter().map(|(kind, count)| format!("{count} {kind}")).collect();
        println!("  ... {} in all: {}", changes.len(), counts.join(", "));
    }
}

fn directory_show(path: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let Some(config) = load_config(path) else { return Ok(ExitCode::from(2)) };
    let keeper = directory_keeper(&config)?;
    let directory = keeper.shared().get();
    let said_by = |said_by: &vouch_config::SaidBy, field: &str| {
        said_by.field(field).map(|origin| format!("  ({origin})")).unwrap_or_default()
    };
    let mut found = false;
    if let Ok(id) = vouch_playbook::PersonId::parse(&name.to_ascii_lowercase()) {
        if let Some(person) = directory.person(&id) {
            found = true;
            println!("person {}{}", person.id, said_by(&person.said_by, "id"));
            println!("  name: {}{}", person.name, said_by(&person.said_by, "name"));
            let manager = person.manager.as_ref().map_or("none".to_string(), ToString::to_string);
            println!("  manager: {manager}{}", said_by(&person.said_by, "manager"));
            let discord = person.discord_id.map_or("none".to_string(), |id| id.to_string());
            println!("  discord id: {discord}{}", said_by(&person.said_by, "discord_id"));
            println!("  roles: {}", person.roles.join(", "));
            println!("  workstations: {}", person.workstations.join(", "));
        }
    }
    if let Some(account) = directory.account(name) {
        found = true;
        println!("account {} ({}){}", account.name, account.kind.id(), said_by(&account.said_by, "name"));
        if let Some(holder) = &account.holder {
            println!("  holder: {holder}{}", said_by(&account.said_by, "holder"));
        }
        if let Some(owner) = &account.owner {
            println!("  owner: {owner}{}", said_by(&account.said_by, "owner"));
        }
    }
    if let Some(asset) = directory.asset(name) {
        found = true;
        println!("machine {}{}", asset.hostname, said_by(&asset.said_by, "hostname"));
        println!("  kind: {}{}", asset.kind.id(), said_by(&asset.said_by, "kind"));
        println!("  criticality: {}{}", asset.criticality.id(), said_by(&asset.said_by, "criticality"));
        let owner = asset.owner.as_ref().map_or("none".to_string(), ToString::to_string);
        println!("  owner: {owner}{}", said_by(&asset.said_by, "owner"));
    }
    let synced = runtime_free_synced_at(&keeper);
    for (source, at) in synced {
        println!("source {source}: last good sync {}", at.map_or("never".to_string(), |at| at.to_rfc3339()));
    }
    if !found {
        println!("nothing in the directory is named `{name}`");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// When each source last synced well, read without a runtime (the keeper's lock is async).
fn runtime_free_synced_at(
    keeper: &crate::directory_sync::DirectoryKeeper,
) -> std::collections::BTreeMap<String, Option<vouch_playbook::Timestamp>> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map(|runtime| runtime.block_on(keeper.synced_at()))
        .unwrap_or_default()
}
