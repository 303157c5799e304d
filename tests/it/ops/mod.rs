//! The operator's surface: `plan`, `status`, `events`, `pin`, `rollback`
//! through the binary, against the real database and engine.

mod canary;
mod dashboards;
mod deploy;
mod pin;
mod pipe;
mod plan;
mod retention;
mod status;

use crate::controller::World;

/// Runs `berth args` with `env`; (exit code, stdout, stderr).
pub async fn berth(args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    crate::harness::berth(args, &env).await
}

/// The world's berth settings with `extra` on top.
pub fn env_with(w: &World, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = w.env();
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// Parses a command's JSON output, or panics showing it.
pub fn json(out: &str, err: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}\nstderr:\n{err}"))
}
