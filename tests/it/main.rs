//! Integration tests on a real PostgreSQL and a real Docker Engine. One
//! binary, so one process shares the run's services (see `harness`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod act;
mod build;
mod cli_config;
mod controller;
mod desired;
mod docker_env;
mod harness;
mod observed;
mod ops;
mod retention;
mod schema;
