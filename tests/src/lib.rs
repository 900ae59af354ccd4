//! Vouch's end-to-end suite lives in `e2e/` and the labeled corpus in `corpus/`; this library
//! holds what the benchmarks compare Vouch with, the renderer of one event in every shape, and
//! the Microsoft Graph simulator the directory-sync tests read Entra ID from, and the Duo and
//! Okta simulators answers are verified against.

pub mod duo_simulator;
pub mod graph_simulator;
pub mod loopback;
pub mod okta_simulator;
pub mod postgres_server;
pub mod raw_sled_endpoint;
pub mod slapd;
pub mod wrappers;
