//! The playbook crate's tests, through its public API only.

mod engine;
mod hostile;
mod normalize;
