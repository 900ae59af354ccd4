//! Vouch's end-to-end suite lives in `e2e/`; this library holds what the benchmarks compare
//! Vouch with.

pub mod raw_sled_endpoint;
