//! Output into a reader that is gone (`berth status | true`, `berth plan
//! --json | head -c 800`): the output ends quietly and the command's exit
//! code stands; no panic, no backtrace.

use serde_json::json;

use crate::controller::World;

/// Runs `berth args` with `env`, its stdout a pipe whose reader is closed
/// before the binary starts, so that its first write fails with EPIPE;
/// (exit code, stderr).
async fn berth_into_closed_pipe(args: &[&str], env: &[(String, String)]) -> (i32, String) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(args).env_clear().stdout(writer);
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = cmd.output().await.expect("running the berth binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn every_command_writing_into_a_closed_pipe_exits_0_without_a_panic() {
    let w = World::new().await;
    let id = w.insert(json!({})).await.to_string();
    let env = w.env();
    let v2 = w.v2.clone();
    let commands: [&[&str]; 9] = [
        &["config"],
        &["config", "--json"],
        &["migrate"],
        &["status"],
        &["status", "--json"],
        &["events", &id],
        &["plan"],
        &["plan", "--json"],
        &["pin", "agent", &v2, "--yes"],
    ];
    for args in commands {
        let (code, err) = berth_into_closed_pipe(args, &env).await;
        assert_eq!(code, 0, "{args:?}:\n{err}");
        assert!(!err.contains("panicked"), "{args:?}:\n{err}");
    }
    // The change is made even though its preview found no reader.
    let pinned: String = sqlx::query_scalar(
        "SELECT digest FROM runtime_image_pins WHERE template_name = 'agent' AND ring = 'stable'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(pinned, w.v2);
}
