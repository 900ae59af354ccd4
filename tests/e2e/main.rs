//! Vouch's end-to-end suite: the real `vouch` binary, real sled stores in temporary folders,
//! real HTTP on 127.0.0.1. One test binary (see matklad's "Delete cargo integration tests").

mod support;
mod timers;

mod approvals;
mod audit;
mod case_pages;
mod config;
mod crash;
mod demo;
mod directory;
mod discord;
mod failover;
mod graph;
mod ingest;
mod isolation;
mod postgres;
mod retention;
mod scim;
mod storm;
mod verification;
