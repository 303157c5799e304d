//! A password in the prefix URL and `MOLECULE_GITEA_TOKEN` authenticate
//! the fetch and appear nowhere else: not in git's argv, errors, logs,
//! rows, events or `berth config`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth::act::{BuildSettings, Executor, ExecutorSettings, Images};
use berth::config::SecretUrl;
use berth::model::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::executor::placeholder;
use super::{Templates, add_runtime, insert_on, log, start_local};
use crate::controller::World;
use crate::harness::{self, docker};

/// A stand-in git server on 127.0.0.1: it records each request's head,
/// holds it for `hold`, then answers 404.
pub(super) async fn stand_in(hold: Duration) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf).into_owned());
                tokio::time::sleep(hold).await;
                let answer =
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, heads)
}

/// The command lines of every process now, NULs as spaces.
fn command_lines() -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            out.push(String::from_utf8_lossy(&raw).replace('\0', " "));
        }
    }
    out
}

#[tokio::test]
async fn the_token_goes_in_a_header_never_in_argv_or_the_error() {
    let docker = docker::docker().await;
    let mut t = Templates::new();
    let rt = t.runtime();
    let (port, heads) = stand_in(Duration::from_millis(1500)).await;
    let in_url = format!("urlpw{}", harness::unique());
    let gitea = format!("gitea{}", harness::unique());
    let prefix = format!("http://oauth2:{in_url}@127.0.0.1:{port}/org/tpl-");
    let mut build = BuildSettings::new(
        SecretUrl::new(&prefix),
        t.cache.clone(),
        Some(Secret::new(gitea.clone())),
    );
    build.progress_timeout = Duration::from_secs(20);
    build.timeout = Duration::from_secs(20);
    let exec = Executor::new(
        docker.clone(),
        ExecutorSettings {
            host_id: "default".into(),
            registry_auth: None,
            docker_config: None,
            pull_progress_timeout: Duration::from_secs(20),
            pull_timeout: Duration::from_secs(20),
            network_labels: Default::default(),
            images: Images::LocalBuild(build),
            workspace_roots: Vec::new(),
        },
    );
    let (image, source) = placeholder(&rt);
    let ensure = {
        let exec = exec.clone();
        tokio::spawn(async move { exec.ensure_image(&image, &source, None).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while heads.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "git never reached the stand-in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // git is waiting for the answer now: its argv is on show.
    let lines = command_lines();
    let git: Vec<&String> = lines.iter().filter(|l| l.contains("ls-remote")).collect();
    assert!(
        !git.is_empty(),
        "git ls-remote runs while the stand-in holds it"
    );
    for line in &lines {
        assert!(
            !line.contains(&in_url) && !line.contains(&gitea),
            "argv shows a secret: {line}"
        );
    }
    let error = ensure.await.unwrap().unwrap_err().to_string();
    assert!(
        !error.contains(&in_url) && !error.contains(&gitea),
        "{error}"
    );
    assert!(
        error.contains(&format!("127.0.0.1:{port}/org/tpl-{rt}")),
        "{error}"
    );

    let head = heads.lock().unwrap()[0].clone();
    assert!(
        head.starts_with(&format!(
            "GET /org/tpl-{rt}/info/refs?service=git-upload-pack "
        )),
        "{head}"
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("oauth2:{gitea}"));
    assert!(
        head.contains(&format!("Authorization: Basic {basic}\r\n")),
        "{head}"
    );
}

#[tokio::test]
async fn tokens_appear_nowhere_in_logs_rows_events_or_berth_config() {
    let mut t = Templates::new();
    let mut w = World::new().await;
    let rt = t.runtime();
    add_runtime(&w, &rt).await;
    let (port, _heads) = stand_in(Duration::ZERO).await;
    let in_url = format!("urlpw{}", harness::unique());
    let gitea = format!("gitea{}", harness::unique());
    let prefix = format!("http://oauth2:{in_url}@127.0.0.1:{port}/org/tpl-");
    t.prefix = prefix.clone();
    start_local(&mut w, &t, &[("MOLECULE_GITEA_TOKEN", gitea.as_str())]);
    let id = insert_on(&w, &rt).await;
    let row = w
        .wait_row(id, 60, "image_build_failed", |r| {
            r.is("provisioning", Some("image_build_failed"))
        })
        .await;
    let cause = row.last_error.clone().unwrap_or_default();
    assert!(
        cause.contains(&format!("127.0.0.1:{port}/org/tpl-{rt}")),
        "{cause}"
    );

    let row_text: String =
        sqlx::query_scalar("SELECT row_to_json(w)::text FROM workspaces w WHERE id = $1")
            .bind(id.0)
            .fetch_one(&w.pool)
            .await
            .unwrap();
    let events: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(row_to_json(e)::text, E'\\n'), '') FROM workspace_events e WHERE workspace_id = $1",
    )
    .bind(id.0)
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert!(
        events.contains("local build"),
        "the failure is in the events: {events}"
    );
    let mut env = w.env();
    env.retain(|(k, _)| k != "MOLECULE_IMAGE_REGISTRY");
    env.push(("MOLECULE_LOCAL_TEMPLATE_REPO_PREFIX".into(), prefix.clone()));
    env.push(("MOLECULE_GITEA_TOKEN".into(), gitea.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, config, stderr) = harness::berth(&["config"], &env).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(config.contains("oauth2:***@127.0.0.1"), "{config}");
    assert!(
        config.contains("image mode: local-build (templates from "),
        "{config}"
    );
    for (place, text) in [
        ("log", log(&w)),
        ("row", row_text),
        ("events", events),
        ("berth config", config + &stderr),
    ] {
        assert!(!text.is_empty(), "{place} is empty");
        assert!(!text.contains(&in_url), "{place} shows the URL password");
        assert!(!text.contains(&gitea), "{place} shows MOLECULE_GITEA_TOKEN");
    }
}
