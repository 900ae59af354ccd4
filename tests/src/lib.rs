//! Vouch's end-to-end suite lives in `e2e/` and the labeled corpus in `corpus/`; this library
//! holds what the benchmarks compare Vouch with and the renderer of one event in every shape.

pub mod raw_sled_endpoint;
pub mod wrappers;
