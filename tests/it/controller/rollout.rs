//! Pin rollouts in waves: a bad pin touches only the canary and is written
//! back, a good one goes at most max-parallel at a time and becomes stable,
//! `berth rollback` after it goes back in the same waves, and a pin that
//! does not hold replaces nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use berth::model::WorkspaceId;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::{World, most_at_once};

pub(super) async fn digest(w: &World, tag: &str) -> String {
    let reference = format!("{}/berth-test/agent:{tag}", crate::harness::env().registry);
    w.scope
        .docker
        .inspect_registry_image(&reference, None)
        .await
        .unwrap()
        .descriptor
        .digest
        .unwrap()
}

pub(super) async fn pin(w: &World, digest: &str) {
    sqlx::query("UPDATE runtime_image_pins SET digest = $1, updated_by = 'test' WHERE template_name = 'agent'")
        .bind(digest)
        .execute(&w.pool)
        .await
        .unwrap();
}

/// (container id, start time) of each workspace's container.
pub(super) async fn containers(
    w: &World,
    ids: &[WorkspaceId],
) -> Vec<(Option<String>, Option<String>)> {
    let mut out = Vec::new();
    for id in ids {
        let c = w.container(*id).await.unwrap();
        out.push((c.id.clone(), c.state.unwrap().started_at));
    }
    out
}

/// Waits until a halt wrote v1 back, counting the canary's one failure.
pub(super) async fn halted_on_the_canary(w: &World) {
    wait_pin(w, &w.v1, 90).await;
    let note: Option<String> =
        sqlx::query_scalar("SELECT note FROM runtime_image_pin_history ORDER BY id DESC LIMIT 1")
            .fetch_one(&w.pool)
            .await
            .unwrap();
    let note = note.unwrap_or_default();
    assert!(
        note.contains("1 of 1"),
        "the canary's failure is counted: {note}"
    );
}

/// Waits until the pin names `digest` (a halt wrote it back).
pub(super) async fn wait_pin(w: &World, digest: &str, secs: u64) {
    let what = format!("the pin written back to {digest}");
    w.poll(secs, &what, Duration::from_millis(300), || async {
        let now: String = sqlx::query_scalar(
            "SELECT digest FROM runtime_image_pins WHERE template_name = 'agent'",
        )
        .fetch_one(&w.pool)
        .await
        .unwrap();
        (now == digest).then_some(())
    })
    .await
}

/// The workspace whose new container runs `digest` while its old one
/// waits under `-prev`: a replace under way.
pub(super) async fn canary_under_way(w: &World, ids: &[WorkspaceId], digest: &str) -> WorkspaceId {
    w.poll(
        60,
        "a canary under way",
        Duration::from_millis(100),
        || async {
            for id in ids {
                let prev = w.has_prev(*id).await;
                let on_it = w
                    .container(*id)
                    .await
                    .and_then(|c| c.config)
                    .and_then(|c| c.image)
                    .is_some_and(|image| image.ends_with(digest));
                if prev && on_it {
                    return Some(*id);
                }
            }
            None
        },
    )
    .await
}

#[tokio::test]
async fn a_berth_restarted_while_a_good_canary_waits_for_readiness_halts_nothing() {
    let mut w = World::new().await;
    w.start(&[]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(w.insert(json!({"AGENT_READY_AFTER": "4"})).await);
    }
    for id in &ids {
        w.wait_row(*id, 90, "online", |r| r.is("online", None) && r.converged())
            .await;
    }
    let env = [
        ("BERTH_PROVISION_TIMEOUT", "20s"),
        ("BERTH_ROLLOUT_CANARY", "1"),
    ];
    w.berth.take().unwrap().kill().await;
    // The rows' last change is older than the provision timeout.
    tokio::time::sleep(Duration::from_secs(21)).await;
    w.start(&env);
    let v2 = w.v2.clone();
    pin(&w, &v2).await;
    // The pin changed no row: a restarted berth must not time the canary
    // from the row's last change, long past.
    canary_under_way(&w, &ids, &v2).await;
    w.berth.take().unwrap().kill().await;
    w.start(&env);
    w.wait_online_on(&ids, &v2, 120, "online on v2").await;
    assert_eq!(halts(&w).await, 0, "a good image was halted");
}

/// The workspaces a replace onto a new image was tried on (each one's
/// new container made), in no order.
pub(super) async fn replaced(w: &World) -> Vec<uuid::Uuid> {
    sqlx::query_scalar(
        "SELECT DISTINCT workspace_id FROM workspace_events
          WHERE action = 'create' AND reason LIKE 'recreate:%'",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap()
}

/// How many times berth halted a rollout and wrote a pin back.
pub(super) async fn halts(w: &World) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM runtime_image_pin_history WHERE halt")
        .fetch_one(&w.pool)
        .await
        .unwrap()
}

/// Restarts berth with a short provision deadline and canary 1 (a loaded
/// machine may need longer for the first starts), then pins the image
/// that never becomes ready; the workspaces' containers before it.
pub(super) async fn pin_broken_with_a_short_deadline(
    w: &mut World,
    ids: &[WorkspaceId],
) -> Vec<(Option<String>, Option<String>)> {
    w.berth.take().unwrap().kill().await;
    w.start(&[
        ("BERTH_PROVISION_TIMEOUT", "8s"),
        ("BERTH_ROLLOUT_CANARY", "1"),
    ]);
    let before = containers(w, ids).await;
    let broken = digest(w, "broken").await;
    pin(w, &broken).await;
    before
}

pub(super) async fn online_all(w: &World, n: usize) -> Vec<WorkspaceId> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(w.insert(json!({})).await);
    }
    for id in &ids {
        w.wait_row(*id, 90, "online", |r| r.is("online", None) && r.converged())
            .await;
    }
    ids
}

#[tokio::test]
async fn a_bad_pin_touches_only_the_canary_and_is_written_back() {
    let mut w = World::new().await;
    w.start(&[]);
    let ids = online_all(&w, 5).await;
    let before = pin_broken_with_a_short_deadline(&mut w, &ids).await;

    let v1 = w.v1.clone();
    wait_pin(&w, &v1, 90).await;
    let (by, note): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT updated_by, note FROM runtime_image_pin_history ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(by.as_deref(), Some("berth"));
    let note = note.unwrap_or_default();
    assert!(note.contains("failed readiness"), "{note}");
    assert!(
        ids.iter().any(|id| note.contains(&id.id12())),
        "the note names the failing workspace: {note}"
    );

    // Settle, then count who was touched.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = containers(&w, &ids).await;
    let touched: Vec<usize> = (0..ids.len()).filter(|i| before[*i] != after[*i]).collect();
    assert!(
        touched.len() <= 1,
        "more than the canary was touched: {touched:?}"
    );
    let tried = replaced(&w).await;
    assert_eq!(tried.len(), 1, "exactly the canary tried the bad image");
    for id in &ids {
        let row = w.row(*id).await;
        assert_eq!(row.status.as_deref(), Some("online"), "{row:?}");
        assert_eq!(
            row.runtime_image_digest.as_deref(),
            Some(v1.as_str()),
            "{row:?}"
        );
    }
    // Every container runs the v1 image again.
    let images: std::collections::BTreeSet<Option<String>> = {
        let mut s = std::collections::BTreeSet::new();
        for id in &ids {
            s.insert(w.container(*id).await.unwrap().image);
        }
        s
    };
    assert_eq!(images.len(), 1, "all on one image: {images:?}");
}

#[tokio::test]
async fn a_berth_killed_while_the_canary_waits_for_readiness_still_touches_only_the_canary() {
    let mut w = World::new().await;
    w.start(&[]);
    let ids = online_all(&w, 4).await;
    let env = [
        ("BERTH_PROVISION_TIMEOUT", "12s"),
        ("BERTH_ROLLOUT_CANARY", "1"),
        ("BERTH_ROLLOUT_MAX_PARALLEL", "2"),
    ];
    w.berth.take().unwrap().kill().await;
    w.start(&env);
    let before = containers(&w, &ids).await;
    let broken = digest(&w, "broken").await;
    pin(&w, &broken).await;

    // The canary's new container runs the bad image, not ready, with the
    // old one under `-prev`: berth dies there.
    let canary = canary_under_way(&w, &ids, &broken).await;
    w.berth.take().unwrap().kill().await;
    w.start(&env);

    let v1 = w.v1.clone();
    halted_on_the_canary(&w).await;

    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = containers(&w, &ids).await;
    for (i, id) in ids.iter().enumerate() {
        if *id != canary {
            assert_eq!(
                before[i], after[i],
                "{id} was touched besides the canary {canary}"
            );
        }
        let row = w.row(*id).await;
        assert_eq!(row.status.as_deref(), Some("online"), "{row:?}");
        assert_eq!(
            row.runtime_image_digest.as_deref(),
            Some(v1.as_str()),
            "{row:?}"
        );
    }
}

/// Removes container `name` as the engine would finish a removal berth
/// sent just before it died: one the engine has under way already (a busy
/// engine may still be at it) is waited for.
async fn gone_by_hand(name: &str) {
    for _ in 0..150 {
        let out = tokio::process::Command::new("docker")
            .args(["rm", "-f", name])
            .output()
            .await
            .expect("running the docker CLI");
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || err.contains("No such container") {
            return;
        }
        assert!(
            err.contains("already in progress"),
            "docker rm -f {name}: {err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{name} was not removed within 30 s");
}

/// Workspaces that ignore SIGTERM (each stop takes the stop timeout, so
/// putting the canary back takes seconds), a broken pin, and berth
/// killed while it puts the canary back, then started again; the
/// workspaces. With `finished`, the canary's old container is back
/// under its name before berth starts again, as when the engine carries
/// out the last restore step berth sent just before it died.
async fn killed_while_the_canary_is_put_back(
    w: &mut World,
    n: usize,
    finished: bool,
) -> Vec<WorkspaceId> {
    let env = [
        ("BERTH_PROVISION_TIMEOUT", "10s"),
        ("BERTH_STOP_TIMEOUT", "6s"),
        ("BERTH_ROLLOUT_CANARY", "1"),
        ("BERTH_ROLLOUT_MAX_PARALLEL", "2"),
    ];
    w.start(&env);
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(
            w.insert(serde_json::json!({"AGENT_IGNORE_TERM": "1"}))
                .await,
        );
    }
    for id in &ids {
        w.wait_row(*id, 90, "online", |r| r.is("online", None) && r.converged())
            .await;
    }
    let broken = digest(w, "broken").await;
    pin(w, &broken).await;

    // The undone change is on record while the new container is still
    // being stopped to put the old one back.
    let canary = w
        .poll(
            90,
            "the undo on record",
            Duration::from_millis(20),
            || async {
                let undone: Option<uuid::Uuid> = sqlx::query_scalar(
                    "SELECT workspace_id FROM workspace_events
                  WHERE action = 'status' AND reason = 'online/rolled_back' LIMIT 1",
                )
                .fetch_optional(&w.pool)
                .await
                .unwrap();
                undone.map(WorkspaceId)
            },
        )
        .await;
    assert!(
        w.has_prev(canary).await,
        "the undo was on record only after the old container was back"
    );
    w.berth.take().unwrap().kill().await;
    if finished {
        let name = canary.container_name();
        gone_by_hand(&name).await;
        crate::act::docker_cli(&["rename", &canary.prev_container_name(), &name]).await;
        crate::act::docker_cli(&["start", &name]).await;
    }
    w.start(&env);
    ids
}

#[tokio::test]
async fn a_lone_canary_put_back_by_a_killed_berth_halts_though_nothing_is_left_to_replace() {
    // The one workspace on the runtime was the canary: once it is back,
    // no replace of the rollout is left to plan, and the halt comes all
    // the same, the pin back where it was.
    let mut w = World::new().await;
    let ids = killed_while_the_canary_is_put_back(&mut w, 1, true).await;
    halted_on_the_canary(&w).await;
    let v1 = w.v1.clone();
    w.wait_row(ids[0], 60, "online on v1", |r| {
        r.status.as_deref() == Some("online")
            && r.runtime_image_digest.as_deref() == Some(v1.as_str())
    })
    .await;
}

#[tokio::test]
async fn a_berth_killed_while_it_puts_the_canary_back_halts_without_trying_the_image_again() {
    let mut w = World::new().await;
    let ids = killed_while_the_canary_is_put_back(&mut w, 3, false).await;
    let v1 = w.v1.clone();
    halted_on_the_canary(&w).await;
    let creates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM workspace_events WHERE action = 'create' AND reason LIKE 'recreate:%'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(creates, 1, "the broken image was tried once, on the canary");
    for id in &ids {
        w.wait_row(*id, 60, "online on v1", |r| {
            r.status.as_deref() == Some("online")
                && r.runtime_image_digest.as_deref() == Some(v1.as_str())
        })
        .await;
    }
}

#[tokio::test]
async fn a_halt_puts_back_the_digest_the_workspaces_ran_not_an_older_stable_one() {
    let mut w = World::new().await;
    w.start(&[]);
    let ids = online_all(&w, 3).await;
    // v2 rolls out everywhere, but its rollout is not marked stable (a
    // berth restarted before it saw the end); v1 is the stable one.
    let v2 = digest(&w, "v2").await;
    pin(&w, &v2).await;
    w.wait_online_on(&ids, &v2, 90, "on v2").await;
    sqlx::query(
        "UPDATE runtime_image_pin_history SET stable_at = CASE WHEN new_digest = $1 THEN now() END",
    )
    .bind(&w.v1)
    .execute(&w.pool)
    .await
    .unwrap();
    let before = pin_broken_with_a_short_deadline(&mut w, &ids).await;
    wait_pin(&w, &v2, 90).await;

    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = containers(&w, &ids).await;
    let touched = (0..ids.len()).filter(|i| before[*i] != after[*i]).count();
    assert!(touched <= 1, "only the canary was touched: {touched}");
    for id in &ids {
        let row = w.row(*id).await;
        assert_eq!(
            row.runtime_image_digest.as_deref(),
            Some(v2.as_str()),
            "{row:?}"
        );
    }
}

/// From the events: (start, end) of each workspace's replace.
async fn replace_windows(w: &World) -> BTreeMap<uuid::Uuid, (DateTime<Utc>, DateTime<Utc>)> {
    replace_windows_after(w, 0).await
}

/// As [`replace_windows`], from the events after event `after` only.
async fn replace_windows_after(
    w: &World,
    after: i64,
) -> BTreeMap<uuid::Uuid, (DateTime<Utc>, DateTime<Utc>)> {
    let rows: Vec<(uuid::Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT workspace_id, action, at FROM workspace_events
          WHERE id > $1
            AND ((action = 'stop' AND reason LIKE 'recreate:%')
              OR (action = 'remove_container' AND reason LIKE 'finish replace%'))
          ORDER BY at",
    )
    .bind(after)
    .fetch_all(&w.pool)
    .await
    .unwrap();
    let mut windows: BTreeMap<uuid::Uuid, (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    for (id, action, at) in rows {
        let e = windows.entry(id).or_insert((at, at));
        if action == "stop" {
            e.0 = at;
        } else {
            e.1 = at;
        }
    }
    windows
}

#[tokio::test]
async fn a_good_pin_goes_at_most_max_parallel_at_a_time_and_becomes_stable() {
    let mut w = World::new().await;
    w.start(&[
        ("BERTH_ROLLOUT_CANARY", "1"),
        ("BERTH_ROLLOUT_MAX_PARALLEL", "3"),
        ("BERTH_CONCURRENCY", "8"),
    ]);
    let mut ids = online_all(&w, 11).await;
    for id in &ids {
        w.sh(*id, "echo kept > /workspace/keep").await;
    }
    // A row of the runtime with no container (its spec is refused) runs
    // no old image: the rollout still lands and is marked stable.
    let refused = w.insert(json!({"BAD=KEY": "x"})).await;
    w.wait_row(refused, 30, "refused", |r| {
        r.is("failed", Some("invalid_spec"))
    })
    .await;
    // Nor does one edited into a refusal while its old container serves:
    // no rollout can replace it.
    let blocked = ids.pop().unwrap();
    w.exec(
        r#"UPDATE workspaces SET env = '{"BAD=KEY": "y"}' WHERE id = $1"#,
        blocked,
    )
    .await;
    w.wait_row(blocked, 30, "change blocked", |r| {
        r.is("degraded", Some("change_blocked"))
    })
    .await;
    let v2 = w.v2.clone();
    let watcher = {
        let pool = w.pool.clone();
        tokio::spawn(async move {
            for _ in 0..1200 {
                let seen: Option<serde_json::Value> = sqlx::query_scalar(
                    "SELECT rollout FROM workspaces WHERE rollout->>'state' = 'replacing' LIMIT 1",
                )
                .fetch_optional(&pool)
                .await
                .unwrap()
                .flatten();
                if seen.is_some() {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        })
    };
    pin(&w, &v2).await;
    for id in &ids {
        w.wait_row(*id, 120, "on v2", |r| {
            r.is("online", None) && r.runtime_image_digest.as_deref() == Some(v2.as_str())
        })
        .await;
        assert_eq!(w.sh(*id, "cat /workspace/keep").await.trim(), "kept");
    }
    // A replaced row shows its rollout while it runs, and none once the
    // rollout is over.
    let seen = watcher
        .await
        .unwrap()
        .expect("no row ever showed the rollout");
    assert_eq!(seen["state"], "replacing", "{seen}");
    assert_eq!(seen["to"], v2.as_str(), "{seen}");
    let shown: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM workspace_events WHERE action = 'create' AND reason LIKE 'recreate: digest%'",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(shown as usize, ids.len());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM workspaces WHERE rollout IS NOT NULL")
                .fetch_one(&w.pool)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} rows still show a rollout"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let windows = replace_windows(&w).await;
    assert_eq!(windows.len(), ids.len(), "{windows:?}");
    let most = most_at_once(&windows.values().copied().collect::<Vec<_>>());
    assert!(most <= 3, "{most} replaces overlapped: {windows:?}");
    assert!(most >= 2, "the waves ran in parallel: {windows:?}");
    let first_end = windows.values().map(|(_, e)| *e).min().unwrap();
    let before_canary_done = windows.values().filter(|(s, _)| *s < first_end).count();
    assert_eq!(before_canary_done, 1, "the canary did not go alone");

    wait_stable(&w, &v2, 20).await;
    let kept = w.row(blocked).await;
    assert!(kept.is("degraded", Some("change_blocked")), "{kept:?}");
    assert_eq!(kept.runtime_image_digest.as_deref(), Some(w.v1.as_str()));
}

#[tokio::test]
async fn a_pin_that_does_not_hold_for_the_debounce_replaces_nothing() {
    let mut w = World::new().await;
    w.start(&[("BERTH_PIN_DEBOUNCE", "5s")]);
    let ids = online_all(&w, 2).await;
    let before = containers(&w, &ids).await;
    let (v1, v2) = (w.v1.clone(), w.v2.clone());
    pin(&w, &v2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    pin(&w, &v1).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        containers(&w, &ids).await,
        before,
        "a flapping pin replaced something"
    );
}

/// A pin its workspaces already run needs no rollout: once they are online
/// on it, it is marked stable (`berth rollback` prefers such entries). A
/// ring's pin no workspace is on proves nothing and is not.
#[tokio::test]
async fn a_pin_its_workspaces_already_run_becomes_stable_without_a_rollout() {
    let mut w = World::new().await;
    let (v1, v2) = (w.v1.clone(), w.v2.clone());
    sqlx::query(
        "INSERT INTO runtime_image_pins (template_name, ring, digest) VALUES ('agent', 'beta', $1)",
    )
    .bind(&v2)
    .execute(&w.pool)
    .await
    .unwrap();
    w.start(&[]);
    let ids = online_all(&w, 2).await;
    wait_stable(&w, &v1, 30).await;
    let beta: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT stable_at FROM runtime_image_pin_history WHERE ring = 'beta' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(beta, None, "no workspace runs the beta ring's pin");
    for id in &ids {
        assert_eq!(
            w.row(*id).await.runtime_image_digest.as_deref(),
            Some(v1.as_str())
        );
    }
}

/// Waits until the newest history entry that set `digest` is stable.
pub(super) async fn wait_stable(w: &World, digest: &str, secs: u64) {
    let what = format!("{digest} marked stable");
    w.poll(secs, &what, Duration::from_millis(300), || async {
        let stable: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT stable_at FROM runtime_image_pin_history WHERE new_digest = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(digest)
        .fetch_one(&w.pool)
        .await
        .unwrap();
        stable.map(|_| ())
    })
    .await
}

#[tokio::test]
async fn a_rollback_after_a_stable_pin_goes_back_in_the_same_waves_and_keeps_the_volumes() {
    let mut w = World::new().await;
    w.start(&[
        ("BERTH_ROLLOUT_CANARY", "1"),
        ("BERTH_ROLLOUT_MAX_PARALLEL", "2"),
        ("BERTH_CONCURRENCY", "8"),
    ]);
    let ids = online_all(&w, 5).await;
    // Bytes in both named volumes, read back after the two rollouts.
    let fill =
        "head -c 4096 /dev/urandom > /workspace/data && head -c 512 /dev/urandom > /configs/data";
    let sums = "md5sum /workspace/data /configs/data";
    let mut before = Vec::new();
    for id in &ids {
        w.sh(*id, fill).await;
        before.push(w.sh(*id, sums).await);
    }
    let (v1, v2) = (w.v1.clone(), w.v2.clone());
    pin(&w, &v2).await;
    w.wait_online_on(&ids, &v2, 120, "on v2").await;
    wait_stable(&w, &v2, 30).await;

    let cursor: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM workspace_events")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    let (code, out, err) =
        crate::ops::berth(&["rollback", "agent", "--yes", "--json"], &w.env()).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let change = crate::ops::json(&out, &err);
    assert_eq!(change["from"], v2.as_str(), "{change:#}");
    assert_eq!(change["to"], v1.as_str(), "{change:#}");
    assert_eq!(change["applied"], true, "{change:#}");
    assert_eq!(
        change["touched"].as_array().map(Vec::len),
        Some(ids.len()),
        "{change:#}"
    );

    for id in &ids {
        w.wait_row(*id, 120, "back on v1", |r| {
            r.is("online", None)
                && r.converged()
                && r.runtime_image_digest.as_deref() == Some(v1.as_str())
        })
        .await;
        assert_eq!(w.sh(*id, "cat /www/variant").await.trim(), "v1");
    }
    // The rollback is a rollout like any other: the canary alone, then at
    // most max-parallel at a time, and its digest becomes stable again.
    let windows = replace_windows_after(&w, cursor).await;
    assert_eq!(windows.len(), ids.len(), "{windows:?}");
    let most = most_at_once(&windows.values().copied().collect::<Vec<_>>());
    assert!(most <= 2, "{most} replaces overlapped: {windows:?}");
    assert!(most >= 2, "the waves ran in parallel: {windows:?}");
    let first_end = windows.values().map(|(_, e)| *e).min().unwrap();
    let before_canary_done = windows.values().filter(|(s, _)| *s < first_end).count();
    assert_eq!(before_canary_done, 1, "the canary did not go alone");
    wait_stable(&w, &v1, 30).await;

    for (id, sums_before) in ids.iter().zip(&before) {
        assert_eq!(&w.sh(*id, sums).await, sums_before, "volume bytes changed");
    }
    let replaced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM workspace_events
          WHERE id > $1 AND action = 'create' AND reason LIKE 'recreate: digest%'",
    )
    .bind(cursor)
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(replaced as usize, ids.len(), "one replace per workspace");
}
