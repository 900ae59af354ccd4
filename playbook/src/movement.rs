//! Whether an alert describes a movement between two systems at all. Local and loopback logons,
//! a machine reaching itself, service logons and events that name no system reached are answered
//! plainly and never become cases.

use std::net::IpAddr;

use serde::Serialize;

use crate::facts::Facts;
use crate::model::{Alert, ConnectionKind, System};
use crate::normalize::logon_type_meaning;

/// Why an alert is not a lateral movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotAMovementKind {
    /// The event itself records no movement (privileges assigned, a task created locally).
    EventRecordsNone,
    /// A logon type that happens on the machine itself (keyboard, service, batch, unlock).
    LocalLogon,
    /// The other end is the machine's own loopback address.
    Loopback,
    /// Source and target are the same machine.
    SameSystem,
    /// No system was reached (a cloud sign-in, a credential check on a domain controller).
    NoTarget,
}

impl NotAMovementKind {
    pub fn id(self) -> &'static str {
        match self {
            NotAMovementKind::EventRecordsNone => "event_records_none",
            NotAMovementKind::LocalLogon => "local_logon",
            NotAMovementKind::Loopback => "loopback",
            NotAMovementKind::SameSystem => "same_system",
            NotAMovementKind::NoTarget => "no_target",
        }
    }
}

/// An alert that is not a movement, and why, in words for the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotAMovement {
    pub kind: NotAMovementKind,
    pub reason: String,
}

/// Decides whether the alert describes a movement; `facts` lets a source and a target named
/// differently (an IP and a hostname) be recognised as one machine through the directory.
pub fn judge_movement(alert: &Alert, facts: &Facts) -> Result<(), NotAMovement> {
    let refuse = |kind, reason: String| Err(NotAMovement { kind, reason });
    if let Some(reason) = &alert.not_a_movement {
        return refuse(NotAMovementKind::EventRecordsNone, reason.clone());
    }
    if let Some(meaning) = alert.logon_type.and_then(logon_type_meaning).filter(|meaning| meaning.local) {
        return refuse(
            NotAMovementKind::LocalLogon,
            format!(
                "a {} logon (type {}) happens on the machine itself, not from another one",
                meaning.name, meaning.number
            ),
        );
    }
    if only_loopback(&alert.source) || only_loopback(&alert.target) {
        return refuse(
            NotAMovementKind::Loopback,
            "one end of the connection is the machine's own loopback address".to_string(),
        );
    }
    // Reused authentication material on the machine it was used from is where such a movement
    // starts (a pass-the-hash logon names no target yet): it stays a case.
    let credential_misuse =
        matches!(alert.connection, ConnectionKind::AlternateAuthentication | ConnectionKind::TokenManipulation);
    if alert.target.is_unknown() && !credential_misuse {
        return refuse(
            NotAMovementKind::NoTarget,
            "the alert names no system that was reached, only where the attempt came from".to_string(),
        );
    }
    if same_system(alert, facts) {
        return refuse(
            NotAMovementKind::SameSystem,
            format!("the source and the target are the same machine ({})", alert.target.label()),
        );
    }
    Ok(())
}

fn only_loopback(system: &System) -> bool {
    let named_local = system.hostname.as_deref().is_some_and(|name| name.eq_ignore_ascii_case("localhost"));
    let no_name = system.hostname.is_none() || named_local;
    no_name && (named_local || (!system.ips.is_empty() && system.ips.iter().all(IpAddr::is_loopback)))
}

fn same_system(alert: &Alert, facts: &Facts) -> bool {
    let (source, target) = (&alert.source, &alert.target);
    let same_name = matches!((source.short_hostname(), target.short_hostname()), (Some(a), Some(b)) if a == b);
    let shared_ip = source.ips.iter().any(|ip| target.ips.contains(ip));
    let same_asset = matches!((&facts.source, &facts.target), (Some(a), Some(b)) if a.hostname == b.hostname);
    same_name || shared_ip || same_asset
}
