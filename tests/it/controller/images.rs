//! Moving tags and registries: a tag that moved is replaced once after
//! `berth refresh` (or `BERTH_TAG_REFRESH`), an unchanged tag costs no
//! pull and no replace, and a registry answering 429 is left alone by
//! every workspace at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth::model::WorkspaceId;
use bollard::query_parameters::{
    PushImageOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::World;
use crate::harness;

/// A runtime of its own whose moving tag only this test pushes:
/// `<registry>/berth-test/<repository>:latest`.
struct MovingTag {
    runtime: String,
    /// `<registry>/berth-test/<repository>`.
    repo: String,
}

impl MovingTag {
    async fn new(w: &World) -> MovingTag {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let runtime = format!("rf{suffix}");
        let repository = format!("refresh-{suffix}/agent");
        sqlx::query("INSERT INTO runtimes (name, image_repository) VALUES ($1, $2)")
            .bind(&runtime)
            .bind(&repository)
            .execute(&w.pool)
            .await
            .unwrap();
        MovingTag {
            runtime,
            repo: format!("{}/berth-test/{repository}", harness::env().registry),
        }
    }

    /// Pushes the test agent's `tag` content as this runtime's `latest`.
    async fn push(&self, w: &World, tag: &str) {
        let docker = &w.scope.docker;
        let source = format!("{}/berth-test/agent:{tag}", harness::env().registry);
        harness::docker::pull(docker, &source).await;
        docker
            .tag_image(
                &source,
                Some(
                    TagImageOptionsBuilder::new()
                        .repo(&self.repo)
                        .tag("latest")
                        .build(),
                ),
            )
            .await
            .unwrap();
        let mut push = docker.push_image(
            &self.repo,
            Some(PushImageOptionsBuilder::new().tag("latest").build()),
            None,
        );
        while let Some(item) = push.next().await {
            let info = item.unwrap();
            assert!(info.error_detail.is_none(), "push failed: {info:?}");
        }
    }

    async fn insert(&self, w: &World) -> WorkspaceId {
        let id: uuid::Uuid = sqlx::query_scalar(
            "INSERT INTO workspaces (name, runtime, host, config_files)
             VALUES ('t', $1, $2, '{\"config.yaml\": \"name: t\\n\"}') RETURNING id",
        )
        .bind(&self.runtime)
        .bind(&w.host)
        .fetch_one(&w.pool)
        .await
        .unwrap();
        WorkspaceId(id)
    }

    /// Removes the local references this test and berth made for the
    /// repository (the tag and the by-digest names); the images stay, as
    /// the shared test images name them too.
    async fn cleanup(&self, w: &World) {
        let docker = &w.scope.docker;
        let mut names = vec![format!("{}:latest", self.repo)];
        for d in [&w.v1, &w.v2] {
            names.push(format!("{}@{d}", self.repo));
        }
        for name in names {
            let _ = docker
                .remove_image(
                    &name,
                    Some(RemoveImageOptionsBuilder::new().noprune(true).build()),
                    None,
                )
                .await;
        }
    }
}

#[tokio::test]
async fn a_tag_rollout_cut_short_by_a_restart_goes_on_without_a_refresh() {
    let mut w = World::new().await;
    let tag = MovingTag::new(&w).await;
    tag.push(&w, "v1").await;
    // One replace at a time: the rollout is part way long enough for
    // berth to be killed there.
    let env = [
        ("BERTH_PIN_DEBOUNCE", "0s"),
        ("BERTH_ROLLOUT_CANARY", "1"),
        ("BERTH_ROLLOUT_MAX_PARALLEL", "1"),
    ];
    w.start(&env);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(tag.insert(&w).await);
    }
    online_on(&w, &ids, &w.v1, 90).await;
    tag.push(&w, "v2").await;
    let berth_env = w.env();
    let berth_env: Vec<(&str, &str)> = berth_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (code, _, _) = harness::berth(&["refresh", &tag.runtime], &berth_env).await;
    assert_eq!(code, 0);
    // The canary lands; berth dies before the rest have.
    let v2 = w.v2.clone();
    w.poll(
        90,
        "the canary on v2",
        Duration::from_millis(50),
        || async {
            let on: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workspaces WHERE status = 'online' AND runtime_image_digest = $1",
        )
        .bind(&v2)
        .fetch_one(&w.pool)
        .await
        .unwrap();
            (on >= 1).then_some(())
        },
    )
    .await;
    w.berth.take().unwrap().kill().await;
    let on_v2: i64 =
        sqlx::query_scalar("SELECT count(*) FROM workspaces WHERE runtime_image_digest = $1")
            .bind(&v2)
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert!(on_v2 < 3, "the rollout was over before the kill");
    // No refresh is asked: the restarted berth resolves the tag itself.
    w.start(&env);
    online_on(&w, &ids, &w.v2, 120).await;
    tag.cleanup(&w).await;
}

async fn ensures(w: &World) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM workspace_events WHERE action = 'ensure_image'")
        .fetch_one(&w.pool)
        .await
        .unwrap()
}

async fn online_on(w: &World, ids: &[WorkspaceId], digest: &str, secs: u64) {
    for id in ids {
        w.wait_row(*id, secs, &format!("online on {digest}"), |r| {
            r.is("online", None)
                && r.converged()
                && r.runtime_image_digest.as_deref() == Some(digest)
        })
        .await;
    }
}

async fn container_ids(w: &World, ids: &[WorkspaceId]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        out.push(w.container(*id).await.unwrap().id.unwrap());
    }
    out
}

#[tokio::test]
async fn a_moved_tag_is_replaced_once_after_refresh_and_an_unchanged_one_is_left_alone() {
    let mut w = World::new().await;
    let tag = MovingTag::new(&w).await;
    tag.push(&w, "v1").await;
    w.start(&[
        ("BERTH_PIN_DEBOUNCE", "0s"),
        ("BERTH_ROLLOUT_CANARY", "1"),
        ("BERTH_ROLLOUT_MAX_PARALLEL", "2"),
    ]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(tag.insert(&w).await);
    }
    online_on(&w, &ids, &w.v1, 90).await;
    let before = container_ids(&w, &ids).await;

    // The tag moves; without a refresh (BERTH_TAG_REFRESH is off) nothing
    // notices.
    tag.push(&w, "v2").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        container_ids(&w, &ids).await,
        before,
        "no refresh, no change"
    );

    let env = w.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, out, err) = harness::berth(&["refresh", &tag.runtime, "--json"], &env).await;
    assert_eq!(code, 0, "refresh: {out}\n{err}");
    let view: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["workspaces"].as_array().unwrap().len(), 3, "{view}");
    assert!(
        view["listening_hosts"]
            .as_array()
            .unwrap()
            .contains(&json!(w.host)),
        "{view}"
    );

    // While it rolls out, the rows' rollout column shows the canary alone
    // (the others waiting in wave 0), then the next wave.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let states: Vec<(Option<String>, Option<serde_json::Value>)> = sqlx::query_as(
            "SELECT runtime_image_digest, rollout FROM workspaces WHERE runtime = $1",
        )
        .bind(&tag.runtime)
        .fetch_all(&w.pool)
        .await
        .unwrap();
        for (_, rollout) in &states {
            if let Some(r) = rollout {
                assert_eq!(r["track"], "tag", "{r}");
                seen.insert(format!("{} w{}", r["state"].as_str().unwrap(), r["wave"]));
            }
        }
        if states
            .iter()
            .all(|(d, r)| d.as_deref() == Some(w.v2.as_str()) && r.is_none())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rollout not done: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.contains("waiting w0"), "{seen:?}");
    assert!(seen.contains("replacing w0"), "{seen:?}");
    assert!(seen.contains("replacing w1"), "{seen:?}");
    online_on(&w, &ids, &w.v2, 60).await;
    let after = container_ids(&w, &ids).await;
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(b, a, "every workspace on the tag is replaced");
    }
    for id in &ids {
        assert_eq!(
            w.count_events(*id, "create").await,
            2,
            "created once, replaced once"
        );
    }

    // Re-pushed with the same content: a refresh pulls nothing and
    // replaces nothing.
    tag.push(&w, "v2").await;
    let ensured = ensures(&w).await;
    let (code, out, err) = harness::berth(&["refresh"], &env).await;
    assert_eq!(code, 0, "refresh: {out}\n{err}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(container_ids(&w, &ids).await, after, "nothing recreated");
    assert_eq!(ensures(&w).await, ensured, "no image step, so no pull");
    assert!(
        w.berth
            .as_ref()
            .unwrap()
            .tail()
            .contains("refreshed: unchanged"),
        "the refresh ran and found the tag unchanged:\n{}",
        w.berth.as_ref().unwrap().tail()
    );
    tag.cleanup(&w).await;
}

#[tokio::test]
async fn tag_refresh_replaces_a_moved_tag_without_being_asked() {
    let mut w = World::new().await;
    let tag = MovingTag::new(&w).await;
    tag.push(&w, "v1").await;
    w.start(&[("BERTH_PIN_DEBOUNCE", "0s"), ("BERTH_TAG_REFRESH", "2s")]);
    let id = tag.insert(&w).await;
    online_on(&w, &[id], &w.v1, 90).await;
    tag.push(&w, "v2").await;
    online_on(&w, &[id], &w.v2, 90).await;
    assert_eq!(w.count_events(id, "create").await, 2);
    tag.cleanup(&w).await;
}

/// Deletes `repo`'s manifest `digest` from the run's registry (its
/// storage allows deletes), as a registry's cleanup would.
async fn delete_manifest(repo: &str, digest: &str) {
    let registry = harness::env().registry;
    let name = repo.strip_prefix(&format!("{registry}/")).unwrap();
    let mut stream = tokio::net::TcpStream::connect(&registry).await.unwrap();
    let request =
        format!("DELETE /v2/{name}/manifests/{digest} HTTP/1.0\r\nHost: {registry}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 202") || answer.starts_with("HTTP/1.1 202"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_tags_digest_gone_from_the_registry_is_resolved_again_not_retried_forever() {
    let mut w = World::new().await;
    let tag = MovingTag::new(&w).await;
    tag.push(&w, "v1").await;
    w.start(&[("BERTH_PIN_DEBOUNCE", "0s")]);
    let first = tag.insert(&w).await;
    online_on(&w, &[first], &w.v1, 90).await;
    // The tag moves on and the registry deletes the manifest it named;
    // the last workspace on it goes, and with it the local reference.
    tag.push(&w, "v2").await;
    delete_manifest(&tag.repo, &w.v1).await;
    w.exec(
        "UPDATE workspaces SET desired_state = 'removed' WHERE id = $1",
        first,
    )
    .await;
    w.wait_container(first, 60, "removed", |c| c.is_none())
        .await;
    tag.cleanup(&w).await;

    // berth still knows the tag as v1; the pull of v1 finds nothing, so
    // it resolves the tag again and creates on what it names now.
    let late = tag.insert(&w).await;
    online_on(&w, &[late], &w.v2, 90).await;
    let berth = w.berth.as_ref().unwrap();
    assert!(
        berth.tail().contains("resolving the tag again"),
        "{}",
        berth.tail()
    );
    let failed: Option<String> = sqlx::query_scalar(
        "SELECT detail->>'error' FROM workspace_events
          WHERE workspace_id = $1 AND detail ? 'error' ORDER BY id LIMIT 1",
    )
    .bind(late.0)
    .fetch_optional(&w.pool)
    .await
    .unwrap();
    assert!(
        failed
            .as_deref()
            .is_some_and(|d| d.contains("no longer in the registry")),
        "the failed pull says why: {failed:?}"
    );
    tag.cleanup(&w).await;
}

#[tokio::test]
async fn refresh_without_a_running_berth_says_nothing_was_refreshed() {
    let w = World::new().await;
    let env = w.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, out, err) = harness::berth(&["refresh", "agent"], &env).await;
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("no berth holds a host lease"), "{out}");
    let (code, _, err) = harness::berth(&["refresh", "no-such-runtime"], &env).await;
    assert_eq!(code, 64, "an unknown runtime is bad usage: {err}");
}

/// A registry that answers 429 to everything and counts the attempts
/// (one `GET /v2/` per request the engine makes for berth).
async fn rate_limiting_registry() -> (String, Arc<AtomicUsize>, tokio::task::AbortHandle) {
    refusing_registry(
        "429 Too Many Requests",
        r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
    )
    .await
}

/// A registry that answers `status` with `body` to everything and counts
/// the attempts (one `GET /v2/` per request the engine makes for berth).
async fn refusing_registry(
    status: &'static str,
    body: &'static str,
) -> (String, Arc<AtomicUsize>, tokio::task::AbortHandle) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let pings = Arc::new(AtomicUsize::new(0));
    let counted = pings.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                loop {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if !text.starts_with("GET") && !text.starts_with("HEAD") {
                        // The engine tries TLS first: not HTTP, drop it.
                        return;
                    }
                    if text.starts_with("GET /v2/ ") {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                    let reply = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, pings, task.abort_handle())
}

/// Asserts the registry behind `pings` is backed off, not given up on nor
/// retried per workspace: it is asked again once its window (10 s) has
/// closed, by the first workspace whose own retry comes after that (the
/// retries are jittered: 1, 2, 4, 8 s, each up to twice that, so within
/// 10 to 30 s of the first refusal); that probe, refused, doubles the
/// window (20 s), so nothing more reaches it in the next 15 s however many
/// workspaces retry meanwhile.
async fn one_probe_then_quiet(pings: &AtomicUsize, workspaces: usize) {
    let before = pings.load(Ordering::SeqCst);
    let waiting = std::time::Instant::now();
    while pings.load(Ordering::SeqCst) == before {
        assert!(
            waiting.elapsed() < Duration::from_secs(45),
            "no probe in 45 s: the registry is given up on, not backed off"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let probed_after = waiting.elapsed();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let more = pings.load(Ordering::SeqCst) - before;
    assert_eq!(
        more, 1,
        "{more} attempts for {workspaces} workspaces from the probe ({probed_after:?} into the \
         wait) to 15 s after it: one probe, then the doubled window"
    );
}

/// `n` workspaces whose rows name `image` explicitly.
async fn on_image(w: &World, image: &str, n: usize) -> Vec<WorkspaceId> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = w.insert(json!({})).await;
        w.exec(
            &format!("UPDATE workspaces SET image = '{image}' WHERE id = $1"),
            id,
        )
        .await;
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn a_registry_refusing_credentials_is_registry_auth_and_backed_off() {
    let mut w = World::new().await;
    let (addr, pings, server) = refusing_registry(
        "401 Unauthorized",
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
    )
    .await;
    let port = harness::process::free_port();
    w.start(&[("BERTH_LISTEN", &format!("127.0.0.1:{port}"))]);
    let image = format!("{addr}/private/agent:latest");
    let ids = on_image(&w, &image, 3).await;
    for id in &ids {
        w.wait_row(*id, 60, "registry_auth", |r| {
            r.is("provisioning", Some("registry_auth"))
        })
        .await;
    }
    one_probe_then_quiet(&pings, ids.len()).await;
    for id in &ids {
        let row = w.row(*id).await;
        assert!(row.is("provisioning", Some("registry_auth")));
        let said = row.last_error.unwrap_or_default();
        assert!(
            said.contains("credentials sent: none"),
            "the row says no credentials went: {said}"
        );
        assert!(w.container(*id).await.is_none(), "nothing was created");
    }
    let metrics = harness::process::get(port, "/metrics").await;
    assert!(
        metrics.contains("berth_registry_backoffs{reason=\"auth\"} 1"),
        "{metrics}"
    );
    server.abort();
}

#[tokio::test]
async fn a_rate_limiting_registry_is_backed_off_once_for_every_workspace() {
    let mut w = World::new().await;
    let (addr, pings, server) = rate_limiting_registry().await;
    w.start(&[]);
    let image = format!("{addr}/limited/agent:latest");
    let ids = on_image(&w, &image, 4).await;
    for id in &ids {
        let row = w
            .wait_row(*id, 60, "registry_rate_limited", |r| {
                r.is("provisioning", Some("registry_rate_limited"))
            })
            .await;
        assert!(
            row.last_error
                .as_deref()
                .unwrap_or_default()
                .contains("toomanyrequests"),
            "{row:?}"
        );
    }
    // The first burst: one request per workspace at most.
    let burst = pings.load(Ordering::SeqCst);
    assert!(burst <= ids.len(), "{burst} attempts before the backoff");
    one_probe_then_quiet(&pings, ids.len()).await;
    for id in &ids {
        let row = w.row(*id).await;
        assert!(
            row.is("provisioning", Some("registry_rate_limited")),
            "{row:?}"
        );
        assert!(w.container(*id).await.is_none(), "nothing was created");
    }
    server.abort();
}

#[tokio::test]
async fn a_failing_image_step_is_retried_with_a_growing_backoff() {
    let mut w = World::new().await;
    w.start(&[]);
    let id = w.insert(json!({})).await;
    let image = format!("{}/berth-test/agent:no-such-tag", harness::env().registry);
    w.exec(
        &format!("UPDATE workspaces SET image = '{image}' WHERE id = $1"),
        id,
    )
    .await;
    w.wait_row(id, 60, "image_not_found", |r| {
        r.is("provisioning", Some("image_not_found"))
    })
    .await;
    let tries = || w.count_events(id, "ensure_image");
    let first = tries().await;
    tokio::time::sleep(Duration::from_secs(16)).await;
    let more = tries().await - first;
    // 1 s doubling (with jitter): about four more tries in 16 s; a
    // backoff that starts over at each report would make ~16.
    assert!((2..=6).contains(&more), "{more} more image steps in 16 s");
}

#[tokio::test]
async fn a_pin_to_a_missing_digest_blocks_the_change_and_touches_nothing() {
    let mut w = World::new().await;
    w.start(&[("BERTH_PIN_DEBOUNCE", "0s")]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(w.insert(json!({})).await);
    }
    online_on(&w, &ids, &w.v1, 90).await;
    let started = |c: bollard::models::ContainerInspectResponse| {
        (c.id.unwrap(), c.state.unwrap().started_at.unwrap())
    };
    let mut before = Vec::new();
    for id in &ids {
        before.push(started(w.container(*id).await.unwrap()));
    }

    let missing = format!("sha256:{}", "0".repeat(64));
    sqlx::query(
        "UPDATE runtime_image_pins SET digest = $1, updated_by = 'test', note = 'missing'
          WHERE template_name = 'agent' AND ring = 'stable'",
    )
    .bind(&missing)
    .execute(&w.pool)
    .await
    .unwrap();
    for id in &ids {
        let row = w
            .wait_row(*id, 60, "degraded/change_blocked", |r| {
                r.is("degraded", Some("change_blocked"))
            })
            .await;
        assert_eq!(row.runtime_image_digest.as_deref(), Some(w.v1.as_str()));
        assert!(
            row.last_error
                .as_deref()
                .unwrap_or_default()
                .contains("0000000"),
            "the error names the digest: {row:?}"
        );
    }
    // Some more passes (retries with backoff) change nothing either.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (id, was) in ids.iter().zip(&before) {
        assert_eq!(&started(w.container(*id).await.unwrap()), was, "untouched");
    }
    let (pinned, history): (String, i64) = sqlx::query_as(
        "SELECT p.digest, (SELECT count(*) FROM runtime_image_pin_history h
                            WHERE h.template_name = 'agent' AND h.new_digest = $1
                              AND h.updated_by = 'test')
           FROM runtime_image_pins p WHERE p.template_name = 'agent' AND p.ring = 'stable'",
    )
    .bind(&missing)
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(pinned, missing, "a failed pull reverts nothing");
    assert_eq!(history, 1, "the history records the attempt");
    assert_eq!(super::rollout::halts(&w).await, 0, "reverted");
}

#[tokio::test]
async fn a_tag_that_moved_onto_a_broken_image_halts_at_the_canary_and_stays_held_back() {
    let mut w = World::new().await;
    let tag = MovingTag::new(&w).await;
    tag.push(&w, "v1").await;
    w.start(&[("BERTH_PIN_DEBOUNCE", "0s")]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(tag.insert(&w).await);
    }
    online_on(&w, &ids, &w.v1, 90).await;
    // A short deadline only for the rollout.
    w.berth.take().unwrap().kill().await;
    let port = harness::process::free_port();
    let listen = format!("127.0.0.1:{port}");
    w.start(&[
        ("BERTH_PIN_DEBOUNCE", "0s"),
        ("BERTH_PROVISION_TIMEOUT", "20s"),
        ("BERTH_ROLLOUT_CANARY", "1"),
        ("BERTH_ROLLOUT_MAX_PARALLEL", "3"),
        ("BERTH_LISTEN", &listen),
    ]);
    for id in &ids {
        w.wait_row(*id, 60, "online after the restart", |r| {
            r.is("online", None)
        })
        .await;
    }
    let before = container_ids(&w, &ids).await;
    tag.push(&w, "broken").await;
    let env = w.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, out, err) = harness::berth(&["refresh", &tag.runtime], &env).await;
    assert_eq!(code, 0, "{out}\n{err}");

    super::wait_logged(w.berth.as_ref().unwrap(), "rollout halted", 90).await;
    // A second refresh finds the same broken digest: held back.
    let (code, _, _) = harness::berth(&["refresh", &tag.runtime], &env).await;
    assert_eq!(code, 0);
    super::wait_logged(
        w.berth.as_ref().unwrap(),
        "refreshed onto an image whose rollout halted",
        30,
    )
    .await;
    let tried: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT workspace_id) FROM workspace_events
          WHERE action = 'create' AND reason LIKE 'recreate:%'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(tried, 1, "exactly the canary tried the broken image");
    let after = container_ids(&w, &ids).await;
    let touched = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    assert!(touched <= 1, "only the canary was touched");
    online_on(&w, &ids, &w.v1, 30).await;
    // The halt shows while the target is held back, after the workspaces
    // are back (the gauge follows a round of passes: one resync, 3 s here).
    w.poll(
        15,
        "berth_rollouts{state=\"halted\"} 1",
        Duration::from_millis(500),
        || async {
            let metrics = harness::process::get(port, "/metrics").await;
            metrics
                .contains("berth_rollouts{state=\"halted\"} 1")
                .then_some(())
        },
    )
    .await;
    // A workspace created after the halt gets the image the others run,
    // not what the tag names now.
    let late = tag.insert(&w).await;
    online_on(&w, &[late], &w.v1, 60).await;
    // The tag moves on to a good image: every workspace takes it, the
    // canary that undid the broken one too.
    tag.push(&w, "v2").await;
    let (code, _, _) = harness::berth(&["refresh", &tag.runtime], &env).await;
    assert_eq!(code, 0);
    ids.push(late);
    online_on(&w, &ids, &w.v2, 120).await;
    tag.cleanup(&w).await;
}
