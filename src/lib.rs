//! berth keeps the workspace containers on one Docker host in line with rows
//! in PostgreSQL.
//!
//! The modules name the pipeline: `desired` (rows) and `observed` (Docker)
//! feed the pure `plan`, whose actions `act` executes; `controller` joins
//! them. `config` is the one place flags and environment are read.

pub mod act;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod controller;
pub mod desired;
pub mod docker;
pub mod http;
pub mod metrics;
pub mod model;
pub mod observed;
pub mod ops;
pub mod plan;
pub mod serve;
pub mod telemetry;
