//! Who acts on the outside world. Every replica takes alerts and serves the case API; exactly one
//! (the leader) runs the work that talks to Discord, calls webhooks, sends pushes, chases silence,
//! syncs the directory on its schedule and archives. On sled there is one process, which leads.
//! On PostgreSQL the replicas campaign for the lead (`Store::campaign`): the winner fences every
//! one of its changes with its epoch, renews its lease every [`RENEW_EVERY`], and steps down the
//! moment a renewal fails or a change finds a newer epoch; a standby ends the session of a leader
//! that stopped renewing for [`STALE_AFTER`], then takes the lead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use vouch_config::{DeliverySettings, RetentionSettings, Settings, VerificationSettings, WebhookSettings};
use vouch_storage::{Campaign, Fence, LeaderLease};

use crate::directory_sync::DirectoryKeeper;
use crate::service::Service;
use crate::verification::{PushToSend, PushVerifier};

/// How often the leader renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// A renewal that takes longer than this counts as failed: the leader steps down.
const RENEW_TIMEOUT: Duration = Duration::from_secs(3);
/// A lease not renewed for this long is taken over. With the standby's tries every
/// [`CAMPAIGN_EVERY`], a stuck leader is replaced within about 12 s, a dead one within 2 s.
pub const STALE_AFTER: Duration = Duration::from_secs(8);
/// How often a standby tries to lead.
const CAMPAIGN_EVERY: Duration = Duration::from_secs(2);
/// How long a replica starting up keeps trying before it says it listens (as a standby, if
/// another replica leads).
const FIRST_CAMPAIGN: Duration = Duration::from_secs(1);

/// What this replica is, for `/healthz` and `/metrics`.
#[derive(Default)]
pub struct LeadershipStatus {
    /// The epoch this replica leads, 0 while it stands by.
    epoch: AtomicU64,
    /// Times this replica took the lead.
    takeovers: AtomicU64,
    /// Whether the replica leads alone (sled): there are no epochs then.
    alone: std::sync::atomic::AtomicBool,
}

impl LeadershipStatus {
    pub fn leads(&self) -> bool {
        self.alone.load(Ordering::Relaxed) || self.epoch.load(Ordering::Relaxed) > 0
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    pub fn takeovers(&self) -> u64 {
        self.takeovers.load(Ordering::Relaxed)
    }

    /// The leadership's metrics, in Prometheus' text format.
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP vouch_leader Whether this replica leads (1) or stands by (0).\n\
             # TYPE vouch_leader gauge\nvouch_leader {}\n\
             # HELP vouch_leader_epoch The leadership epoch this replica leads (0 while standing by or alone).\n\
             # TYPE vouch_leader_epoch gauge\nvouch_leader_epoch {}\n\
             # HELP vouch_leadership_takeovers_total Times this replica took the lead.\n\
             # TYPE vouch_leadership_takeovers_total counter\nvouch_leadership_takeovers_total {}\n",
            u8::from(self.leads()),
            self.epoch(),
            self.takeovers()
        )
    }
}

/// Everything the leader-only work is built from, kept so a replica can start it each time it
/// takes the lead.
pub struct LeaderParts {
    pub settings: Settings,
    pub service: Arc<Service>,
    pub keeper: Arc<DirectoryKeeper>,
    pub verification: Option<Verification>,
}

/// What each leadership's push worker is built from. The requests outlive every worker: pushes
/// asked for while no worker runs wait in them.
pub struct Verification {
    pub settings: VerificationSettings,
    pub verifier: Arc<dyn PushVerifier>,
    pub requests: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<PushToSend>>>,
}

/// The leader-only work while it runs.
pub struct LeaderWork {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    discord: Option<crate::discord::DiscordHandle>,
}

impl LeaderWork {
    async fn start(parts: &LeaderParts) -> anyhow::Result<LeaderWork> {
        let service = &parts.service;
        let settings = &parts.settings;
        let mut tasks = Vec::new();
        if let Some(verification) = &parts.verification {
            let worker = crate::verification::PushWorker::new(
                Arc::clone(service),
                Arc::clone(&verification.verifier),
                verification.settings.clone(),
                Arc::clone(&verification.requests),
            );
            tasks.push(tokio::spawn(worker.run()));
        }
        if !settings.webhooks.is_empty() {
            let webhooks: Vec<WebhookSettings> = settings.webhooks.clone();
            let delivery: DeliverySettings = settings.delivery.clone();
            let deliverer = crate::webhooks::Deliverer::new(Arc::clone(service), webhooks, delivery)?;
            tasks.push(tokio::spawn(deliverer.run()));
        }
        tasks.push(tokio::spawn(crate::timers::run(Arc::clone(service))));
        if let Some(retention) = settings.retention.clone() {
            let retention: RetentionSettings = retention;
            tasks.push(tokio::spawn(crate::retention::keep_archiving(Arc::clone(service), retention)));
        }
        tasks.push(tokio::spawn(crate::directory_sync::run(Arc::clone(&parts.keeper), Arc::clone(&service.clock))));
        tasks.push(tokio::spawn(crate::directory_sync::reroute_on_change(
            Arc::clone(&parts.keeper),
            Arc::clone(service),
        )));
        let discord = match settings.discord.clone() {
            Some(discord) => Some(crate::discord::start(discord, Arc::clone(service)).await?),
            None => {
                tracing::warn!("no [discord] settings: chat effects are recorded on their cases as not delivered");
                let dispatcher = crate::dispatch::Dispatcher::new(Arc::clone(service), crate::dispatch::NoChat);
                tasks.push(tokio::spawn(dispatcher.run()));
                None
            }
        };
        Ok(LeaderWork { tasks, discord })
    }

    async fn stop(self) {
        if let Some(discord) = self.discord {
            discord.shutdown().await;
        }
        for task in self.tasks {
            task.abort();
        }
    }
}

/// The running leadership: the leader-only work, started and stopped as the lead comes and goes.
pub struct Leadership {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Leads alone (sled): the leader-only work starts now and runs until stopped.
    pub async fn alone(parts: LeaderParts, status: Arc<LeadershipStatus>) -> anyhow::Result<Leadership> {
        status.alone.store(true, Ordering::Relaxed);
        let work = LeaderWork::start(&parts).await?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let _ = stopped.await;
            work.stop().await;
        });
        Ok(Leadership { stop, task })
    }

    /// Campaigns for the lead among the replicas sharing the PostgreSQL store, and leads
    /// whenever this replica holds it. The first tries are made before this returns, for a
    /// second at most: a lone replica (or one restarted while its predecessor's session closes)
    /// leads, Discord connected and all, from the moment it says it listens.
    pub async fn campaign(parts: LeaderParts, status: Arc<LeadershipStatus>) -> anyhow::Result<Leadership> {
        parts.service.store.set_fence(Fence::Standby);
        let holder = format!(
            "{}:{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim(),
            std::process::id()
        );
        let (stop, mut stopped) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + FIRST_CAMPAIGN;
        let mut first = None;
        while first.is_none() && tokio::time::Instant::now() < deadline {
            match try_to_lead(&parts, &holder).await {
                Some(lease) => first = take_lead(&parts, &status, lease).await,
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let task = tokio::spawn(async move {
            let mut taken = first;
            loop {
                if taken.is_none() {
                    if let Some(lease) = try_to_lead(&parts, &holder).await {
                        taken = take_lead(&parts, &status, lease).await;
                    }
                }
                if let Some(lead) = taken.take() {
                    if hold_lead(&parts, &status, lead, &mut stopped).await == Ended::Stopped {
                        return;
                    }
                }
                tokio::select! {
                    _ = &mut stopped => return,
                    () = tokio::time::sleep(CAMPAIGN_EVERY) => {}
                }
            }
        });
        Ok(Leadership { stop, task })
    }

    /// Stops the leader-only work (closing the gateway session) and gives up the lead.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[derive(PartialEq, Eq)]
enum Ended {
    Stopped,
    SteppedDown,
}

/// One try to lead; the lease when won.
async fn try_to_lead(parts: &LeaderParts, holder: &str) -> Option<LeaderLease> {
    let store = Arc::clone(&parts.service.store);
    let holder = holder.to_string();
    match tokio::task::spawn_blocking(move || store.campaign(&holder, STALE_AFTER)).await {
        Ok(Ok(Campaign::Won(lease))) => Some(lease),
        Ok(Ok(Campaign::Lost)) => None,
        Ok(Ok(Campaign::EndedAStaleLeader { holder, epoch })) => {
            tracing::warn!(%holder, epoch, stale_after = ?STALE_AFTER, "the leader stopped renewing its lease: its session was ended");
            None
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot campaign for the lead");
            None
        }
        Err(_) => None,
    }
}

/// The lead while this replica holds it: the lease and the work it runs.
struct Lead {
    lease: Arc<Mutex<Option<LeaderLease>>>,
    epoch: u64,
    work: LeaderWork,
}

/// Takes the lead under `lease`: fences this replica's changes with its epoch, reads what the
/// last leader may have changed, and starts the leader-only work. `None` (standing by) when that
/// fails.
async fn take_lead(parts: &LeaderParts, status: &LeadershipStatus, lease: LeaderLease) -> Option<Lead> {
    let epoch = lease.epoch();
    let store = Arc::clone(&parts.service.store);
    store.set_fence(Fence::Leader(epoch));
    // What a standby kept in memory may be stale: another leader changed it meanwhile.
    if let Err(error) = reload_after_takeover(&parts.service).await {
        tracing::error!(error = format!("{error:#}"), "cannot read what the last leader left; standing by");
        store.set_fence(Fence::Standby);
        return None;
    }
    let work = match LeaderWork::start(parts).await.context("cannot start the leader's work") {
        Ok(work) => work,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "standing by");
            store.set_fence(Fence::Standby);
            return None;
        }
    };
    status.epoch.store(epoch, Ordering::Relaxed);
    status.takeovers.fetch_add(1, Ordering::Relaxed);
    tracing::info!(epoch, "this replica leads");
    Some(Lead { lease: Arc::new(Mutex::new(Some(lease))), epoch, work })
}

/// Renews the lease until stopped, or until the lead is lost, then stops the work.
async fn hold_lead(
    parts: &LeaderParts,
    status: &LeadershipStatus,
    lead: Lead,
    stopped: &mut oneshot::Receiver<()>,
) -> Ended {
    let Lead { lease, epoch, work } = lead;
    let store = Arc::clone(&parts.service.store);
    let ended = loop {
        tokio::select! {
            _ = &mut *stopped => break Ended::Stopped,
            () = tokio::time::sleep(RENEW_EVERY) => {}
        }
        if store.fence() != Fence::Leader(epoch) {
            tracing::warn!(epoch, "a change found a newer leader: stepping down");
            break Ended::SteppedDown;
        }
        let renewing = Arc::clone(&lease);
        let renewal = tokio::task::spawn_blocking(move || {
            let lease = renewing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            lease.as_ref().map(LeaderLease::renew)
        });
        match tokio::time::timeout(RENEW_TIMEOUT, renewal).await {
            Ok(Ok(Some(Ok(true)))) => {}
            Ok(Ok(Some(Ok(false)))) => {
                tracing::warn!(epoch, "another replica took the lead: stepping down");
                break Ended::SteppedDown;
            }
            Ok(Ok(Some(Err(error)))) => {
                tracing::warn!(epoch, %error, "the lease could not be renewed: stepping down");
                break Ended::SteppedDown;
            }
            _ => {
                tracing::warn!(epoch, "the lease was not renewed in time: stepping down");
                break Ended::SteppedDown;
            }
        }
    };
    match ended {
        // Still the leader: the work finishes what it is doing (an effect carried out is marked
        // done) before the changes are fenced.
        Ended::Stopped => {
            work.stop().await;
            store.set_fence(Fence::Standby);
        }
        // Perhaps no longer the leader: fence first, so nothing acts while the work winds down.
        Ended::SteppedDown => {
            store.set_fence(Fence::Standby);
            work.stop().await;
        }
    }
    status.epoch.store(0, Ordering::Relaxed);
    // Dropping the lease closes its connection, which gives the lock back at once.
    if let Ok(mut lease) = lease.try_lock() {
        lease.take();
    }
    ended
}

async fn reload_after_takeover(service: &Arc<Service>) -> anyhow::Result<()> {
    let service = Arc::clone(service);
    tokio::task::spawn_blocking(move || service.links.reload(&service.store)).await?.context("the linked accounts")
}
