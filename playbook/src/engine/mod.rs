//! The triage engine: what a case knows when it opens, and how each event changes it.
//!
//! Both entry points are pure functions of their inputs (the clock is an argument). Their
//! decisions come back as [`Effect`] values that the bot carries out.
//!
//! - [`vocabulary`]: what a case is made of (events, effects, states, confirmations, isolations).
//! - [`assessment`]: [`open_case`], what the alert, the directory and history say when it opens.
//! - [`lifecycle`]: [`apply`], how each event changes a case, and the case's own rules.

pub mod assessment;
pub mod lifecycle;
pub mod vocabulary;

pub use assessment::open_case;
pub use lifecycle::{apply, NOT_LINKED};
pub use vocabulary::*;
