//! The composition root: builds a running Vouch from a valid configuration (the store, the
//! service, the dispatcher and its chat sink, the webhook deliverer, the timers and the HTTP API)
//! and stops it cleanly. The command line and the demo both start Vouch through here.

use std::sync::Arc;

use anyhow::Context;
use vouch_config::Config;
use vouch_config::StorageBackend;
use vouch_storage::{Backend, PostgresOptions, PostgresTls, Store, StoreOptions};

use crate::ingest::{app, AppState};
use crate::metrics::Metrics;
use crate::service::Service;

pub(crate) fn open_store(config: &Config) -> anyhow::Result<Store> {
    match &config.settings.storage.backend {
        StorageBackend::Sled { data_dir, cache_capacity_mib } => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
            let options = StoreOptions { cache_capacity_bytes: cache_capacity_mib * 1024 * 1024 };
            Store::open(data_dir, &options).context("cannot open the store")
        }
        StorageBackend::Postgres(postgres) => {
            let options = PostgresOptions {
                url: postgres.url.expose().to_string(),
                pool_size: postgres.pool_size,
                tls: match &postgres.tls_ca_file {
                    Some(ca_file) => PostgresTls::Required { ca_file: ca_file.clone() },
                    None => PostgresTls::Disabled,
                },
            };
            Store::open_postgres(&options).context("cannot open the store in PostgreSQL")
        }
    }
}

/// A running Vouch: the HTTP API, the store and (when configured) Discord.
pub struct Running {
    pub address: std::net::SocketAddr,
    pub service: Arc<Service>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    store: Arc<Store>,
    /// The leader-only work (Discord, webhooks, timers, ...), on this replica while it leads.
    leadership: crate::leadership::Leadership,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops taking requests, lets those in flight finish, disconnects and flushes the store.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.server.await.context("the HTTP server task failed")?.context("the HTTP server failed")?;
        self.leadership.stop().await;
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
    // The directory as the sources' last good snapshots and the overlay give it; a source that
    // is down does not stop Vouch from asking the right people.
    let keeper = Arc::new(
        crate::directory_sync::DirectoryKeeper::open(config.settings.directory.clone(), Arc::clone(&store))
            .context("cannot build the directory")?,
    );
    // Recovering the store and building the directory freed what they read on the way.
    let _ = tokio::task::spawn_blocking(crate::memory::return_freed_memory).await;
    let ingest = config.settings.ingest.clone();
    let grouping_window = vouch_playbook::cases::GroupingWindow::minutes(ingest.grouping_window_minutes);
    let cards = match config.settings.discord {
        Some(_) => crate::service::Cards::Drawn,
        None => crate::service::Cards::NotDrawn,
    };
    // Answers the verification policy covers are held until a push is approved.
    let mut playbook = config.playbook;
    let verification = match &config.settings.verification {
        Some(settings) => {
            playbook.verifying = Some(vouch_playbook::verification::Verifying {
                policy: settings.policy.clone(),
                push_lifetime_millis: settings.timeout.as_millis() as i64,
                require_linked: settings.require_linked,
                approval_monitor_days: settings.approval_monitor_days,
            });
            let verifier: Arc<dyn crate::verification::PushVerifier> =
                Arc::from(crate::verification::from_settings(settings).context("cannot set up verification")?);
            let (pushes, requests) = tokio::sync::mpsc::unbounded_channel();
            Some((settings.clone(), verifier, pushes, Arc::new(tokio::sync::Mutex::new(requests))))
        }
        None => None,
    };
    let intake_settings = crate::service::IntakeSettings { grouping_window, cards };
    let intake = crate::intake::Intake::start(Arc::clone(&store), playbook.clone(), intake_settings)
        .context("cannot start the intake thread")?;
    let service = Arc::new(Service {
        store: Arc::clone(&store),
        directory: keeper.shared(),
        directory_stale_after: config.settings.directory.sync.stale_after,
        playbook,
        intake,
        effects_ready: Arc::new(tokio::sync::Notify::new()),
        outbox_ready: Arc::new(tokio::sync::Notify::new()),
        webhooks: config.settings.webhooks.clone(),
        clock,
        oncall: config.settings.oncall.clone(),
        timers: config.settings.timers.clone(),
        timers_ready: Arc::new(tokio::sync::Notify::new()),
        pushes: verification.as_ref().map(|(_, _, pushes, _)| pushes.clone()),
        links: crate::identity_links::LinkedAccounts::load(&store)
            .context("cannot read the linked Discord accounts")?,
        push_cool_down: Default::default(),
        cards,
    });
    let mut background = vec![tokio::spawn(keep_store_open(Arc::clone(&store)))];
    if store.backend() == Backend::Postgres {
        // Replicas see the directory one another keep: syncs of the leader, pushes to anyone.
        background.push(tokio::spawn(Arc::clone(&keeper).follow_store()));
        // The leader hears at once of work another replica's change left (a card for an alert
        // a standby took), instead of at its next poll.
        hear_of_work(&service);
    }
    // Identity providers push people over SCIM 2.0 when a scim source is configured.
    let scim = crate::directory_sync::scim::routes(Arc::clone(&keeper), Arc::clone(&service.clock));
    let parts = crate::leadership::LeaderParts {
        settings: config.settings.clone(),
        service: Arc::clone(&service),
        keeper: Arc::clone(&keeper),
        verification: verification.map(|(settings, verifier, _, requests)| crate::leadership::Verification {
            settings,
            verifier,
            requests,
        }),
    };
    let leadership_status = Arc::new(crate::leadership::LeadershipStatus::default());
    let leadership = match store.backend() {
        Backend::Postgres => crate::leadership::Leadership::campaign(parts, Arc::clone(&leadership_status)).await?,
        Backend::Sled => crate::leadership::Leadership::alone(parts, Arc::clone(&leadership_status)).await?,
    };
    let service_handle = Arc::clone(&service);
    let state = Arc::new(AppState {
        leadership: leadership_status,
        service,
        directory: keeper,
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
    tracing::info!(%address, store = %config.settings.storage.describe(), "vouch is listening");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let router = match scim {
            Some(scim) => app(state).merge(scim),
            None => app(state),
        };
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(Running { address, service: service_handle, stop, server, store, leadership, background })
}

/// Wakes the dispatcher and the deliverer whenever a change anywhere left them work (PostgreSQL's
/// LISTEN/NOTIFY); a lost connection is opened again after a second. On a thread of its own, not
/// the runtime's blocking pool, whose shutdown would wait for a listener's wait to end; it ends
/// once the service is gone.
fn hear_of_work(service: &Arc<Service>) {
    let service = Arc::downgrade(service);
    let spawned = std::thread::Builder::new().name("vouch-work-listener".to_string()).spawn(move || loop {
        let listener = match service.upgrade().map(|service| service.store.listen_for_work()) {
            None => return,
            Some(Ok(Some(listener))) => listener,
            Some(Ok(None)) => return,
            Some(Err(_)) => {
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            }
        };
        loop {
            let heard = listener.wait(std::time::Duration::from_secs(1));
            let Some(service) = service.upgrade() else { return };
            match heard {
                Ok(true) => {
                    service.effects_ready.notify_one();
                    service.outbox_ready.notify_one();
                }
                Ok(false) => {}
                Err(_) => break,
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot listen for work other replicas leave; the leader polls for it");
    }
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
