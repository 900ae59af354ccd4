//! Vouch's core: what a lateral-movement alert is, what the playbook says, and what to do next.
//!
//! - [`model`]: the normalized [`Alert`], one shape whatever sent it.
//! - [`normalize`]: ECS, OCSF, Splunk, raw Windows events and Vouch's own JSON into an [`Alert`].
//! - [`definition`]: the playbook file (`playbooks/lateral-movement.toml`) as typed data.
//! - [`facts`]: what the directory and history know, as the engine reads it.
//! - [`engine`]: [`open_case`] and [`apply`], pure functions returning [`Effect`]s.
//! - [`movement`]: whether an alert describes a movement at all (local, loopback and
//!   same-machine logons do not).
//! - [`cases`]: where an alert belongs (duplicate, joins the open case, new case) and what a
//!   change teaches the movement's history.
//! - [`audit_kind`]: every kind of audit record, refusals named one way.
//! - [`verification`]: which answers must be verified out of band before they count.
//! - [`identity`]: chat accounts bound to people by a push they approved.
//! - [`advance`]: vouches given in advance (standing approvals, declared activity): scoped to
//!   one movement, windowed, and what they do to a new alert.
//!
//! Architecture invariant: this crate does no I/O. It reads no clock, no file, no network; its
//! callers pass `now` in and carry the returned effects out.

pub mod advance;
pub mod audit_kind;
pub mod case_list;
pub mod cases;
pub mod definition;
pub mod engine;
pub mod facts;
pub mod identity;
pub mod ids;
pub mod model;
pub mod movement;
pub mod normalize;
pub mod time;
pub mod verification;

pub use audit_kind::{AuditKind, EventKind};
pub use definition::Playbook;
pub use engine::{apply, open_case, Actor, Applied, Case, CaseEvent, CaseState, Effect, Opening, Refusal};
pub use ids::{AnswerId, CaseId, PersonId, PlaybookVersion, QuestionId, ScenarioId, Snowflake};
pub use model::{Alert, AlertFormat, GroupingKey, MovementKey};
pub use time::Timestamp;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    #[error("the playbook is invalid: {}", .0.join("; "))]
    Invalid(Vec<String>),
}
