//! The intake thread: alerts that arrive together are written together. Each HTTP request hands
//! its alert (with the directory's facts, read on the request's own task) to one thread, which
//! takes everything waiting, records each alert in turn in one store transaction (each sees the
//! ones before it, so a storm's repeats fold into their case one after another), and hands every
//! request its `Pending` write, made durable by the same flush. A burst then pays once for the
//! writer lock and for sled's batch instead of once per alert.

use std::sync::mpsc;
use std::sync::Arc;

use vouch_config::Directory;
use vouch_playbook::facts::Facts;
use vouch_playbook::{Alert, Playbook, Timestamp};
use vouch_storage::{Pending, StorageError, Store};

use crate::service::{ingest_alert, Ingested, IntakeSettings};

/// The most alerts written in one transaction: enough to amortize the lock and the batch, few
/// enough that the first of them does not wait long for the last.
const MOST_PER_WRITE: usize = 128;

struct Job {
    alert: Alert,
    facts: Facts,
    /// The directory the facts came from (who vouched in advance must still be in it).
    directory: Arc<Directory>,
    now: Timestamp,
    reply: tokio::sync::oneshot::Sender<Result<Pending<Ingested>, StorageError>>,
}

/// Where alerts go to be written. Dropping it ends the thread once the queue is empty.
pub struct Intake {
    jobs: mpsc::Sender<Job>,
}

impl Intake {
    /// Starts the intake thread.
    pub fn start(store: Arc<Store>, playbook: Playbook, settings: IntakeSettings) -> std::io::Result<Intake> {
        let (jobs, waiting) = mpsc::channel();
        std::thread::Builder::new()
            .name("vouch-intake".to_string())
            .spawn(move || write_until_closed(&store, &playbook, settings, &waiting))?;
        Ok(Intake { jobs })
    }

    /// Records an alert; the result may be acknowledged once the returned write is durable.
    pub async fn submit(
        &self,
        alert: Alert,
        facts: Facts,
        directory: Arc<Directory>,
        now: Timestamp,
    ) -> Result<Pending<Ingested>, StorageError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs.send(Job { alert, facts, directory, now, reply }).map_err(|_| StorageError::ShuttingDown)?;
        answer.await.map_err(|_| StorageError::ShuttingDown)?
    }
}

fn write_until_closed(store: &Store, playbook: &Playbook, settings: IntakeSettings, waiting: &mpsc::Receiver<Job>) {
    while let Ok(first) = waiting.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MOST_PER_WRITE {
            match waiting.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut replies = Vec::with_capacity(jobs.len());
        let mut alerts = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push(job.reply);
            alerts.push((job.alert, job.facts, job.directory, job.now));
        }
        // A panic while recording one alert (a bug met by some input) must not end the intake
        // for everyone after it: the group is abandoned whole, unwritten, and answered 503.
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.write_group(alerts, |transaction, (alert, facts, directory, now)| {
                ingest_alert(transaction, playbook, settings, alert, facts, &directory, now)
            })
        }))
        .unwrap_or_else(|_| {
            Err(StorageError::Corrupt {
                key: "intake".to_string(),
                reason: "recording an alert failed unexpectedly; the group was not written".to_string(),
            })
        });
        match written {
            Ok(pending) => {
                for (reply, pending) in replies.into_iter().zip(pending) {
                    // A request that went away (its client hung up) needs no answer.
                    let _ = reply.send(Ok(pending));
                }
            }
            Err(error) => {
                tracing::error!(error = %error, alerts = replies.len(), "the store refused a group of alerts");
                let reason = error.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StorageError::Flush(reason.clone())));
                }
            }
        }
    }
}
