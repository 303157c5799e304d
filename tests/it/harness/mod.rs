//! The test harness every integration test uses.
//!
//! `scripts/testenv up` starts the run's services once (a throwaway
//! PostgreSQL cluster, a local registry with the test agent images) and
//! exports where they are; `scripts/test` does that for CI. Each test gets
//! a fresh database and a Docker scope whose objects carry the run's label
//! and a per-test label, removed when the scope drops, even when the test
//! fails.

pub mod docker;
pub mod pg;
pub mod process;
pub mod proxy;

pub use docker::DockerScope;
pub use pg::TestDb;

/// Where the run's services are, from `scripts/testenv`.
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub run_id: String,
    pub pg_url: String,
    pub registry: String,
}

pub fn env() -> TestEnv {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: run the tests through scripts/test, or \
                 `scripts/testenv up .berth/test && . .berth/test/env` first"
            )
        })
    };
    TestEnv {
        run_id: var("BERTH_TEST_RUN_ID"),
        pg_url: var("BERTH_TEST_PG_URL"),
        registry: var("BERTH_TEST_REGISTRY"),
    }
}

/// A unique, lower-case, label- and identifier-safe token.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

/// Runs the `berth` binary with exactly `env` as its berth-related
/// environment and returns (exit code, stdout, stderr).
pub async fn berth(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(args).env_clear().kill_on_drop(true);
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("running the berth binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
