//! A rollout's edges: a bad pin's canary stays the only workspace it
//! touches when berth is killed part way through the canary's restore, a
//! wave's wait does not count against a workspace's provision timeout, and
//! a workspace crash looping before a good pin does not halt it, and a
//! digest pinned again after its halt is tried afresh, the first canary
//! included; a row written right after a pin edit is created on the new
//! digest once.

use std::time::Duration;

use super::rollout::{
    canary_under_way, containers, digest, halts, online_all, pin, pin_broken_with_a_short_deadline,
    replaced, wait_pin,
};

#[tokio::test]
async fn a_restore_cut_short_by_a_restart_keeps_the_bad_pin_on_the_canary() {
    let mut w = super::World::new().await;
    w.start(&[]);
    let ids = online_all(&w, 4).await;
    let before = pin_broken_with_a_short_deadline(&mut w, &ids).await;
    let broken = digest(&w, "broken").await;
    let canary = canary_under_way(&w, &ids, &broken).await;

    // berth dies as the restore has removed the new container and not yet
    // put the old one back: `-prev` and nothing under the name.
    w.berth.take().unwrap().kill().await;
    w.remove_by_hand(canary).await;
    w.start(&[
        ("BERTH_PROVISION_TIMEOUT", "8s"),
        ("BERTH_ROLLOUT_CANARY", "1"),
    ]);

    let v1 = w.v1.clone();
    wait_pin(&w, &v1, 90).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let tried = replaced(&w).await;
    assert_eq!(tried, [canary.0], "only the canary tried the bad image");
    let after = containers(&w, &ids).await;
    for (i, id) in ids.iter().enumerate() {
        if *id != canary {
            assert_eq!(before[i], after[i], "{id} was touched");
        }
        w.wait_row(*id, 60, "online on v1", |r| {
            r.is("online", None) && r.runtime_image_digest.as_deref() == Some(v1.as_str())
        })
        .await;
    }
}

#[tokio::test]
async fn a_row_edit_with_the_pin_in_one_transaction_times_each_replace_from_its_wave() {
    let mut w = super::World::new().await;
    w.start(&[]);
    let ids = online_all(&w, 6).await;
    w.berth.take().unwrap().kill().await;
    // One at a time, each replace waits for its readiness (about 4 s): the
    // last one's wave opens well past the row edit's provision timeout,
    // which each replace alone stays well inside.
    w.start(&[
        ("BERTH_PROVISION_TIMEOUT", "15s"),
        ("BERTH_ROLLOUT_CANARY", "1"),
        ("BERTH_ROLLOUT_MAX_PARALLEL", "1"),
    ]);
    let v2 = w.v2.clone();
    let mut tx = w.pool.begin().await.unwrap();
    sqlx::query(r#"UPDATE workspaces SET env = '{"AGENT_READY_AFTER": "2"}' WHERE host = $1"#)
        .bind(&w.host)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE runtime_image_pins SET digest = $1 WHERE template_name = 'agent'")
        .bind(&v2)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    for id in &ids {
        w.wait_row(*id, 180, "online on v2", |r| {
            r.is("online", None)
                && r.converged()
                && r.runtime_image_digest.as_deref() == Some(v2.as_str())
        })
        .await;
    }
    assert_eq!(halts(&w).await, 0, "a good image was halted");
}

/// A workspace crash looping on any image (its own env) beside `n` online
/// ones, then v2 pinned: those `n` are online on it.
async fn good_pin_beside_a_crash_looper(
    w: &super::World,
    n: usize,
) -> (berth::model::WorkspaceId, Vec<berth::model::WorkspaceId>) {
    let looping = w.insert(serde_json::json!({"AGENT_EXIT_AFTER": "1"})).await;
    w.wait_row(looping, 90, "crash looping", |r| {
        r.is("degraded", Some("crash_loop"))
    })
    .await;
    let ids = online_all(w, n).await;
    let v2 = w.v2.clone();
    pin(w, &v2).await;
    w.wait_online_on(&ids, &v2, 120, "online on v2").await;
    (looping, ids)
}

#[tokio::test]
async fn a_workspace_crash_looping_before_a_good_pin_neither_halts_it_nor_keeps_it_from_stable() {
    let mut w = super::World::new().await;
    // A debounce: the pin holds 2 s before its rollout starts.
    w.start(&[
        ("BERTH_PROVISION_TIMEOUT", "20s"),
        ("BERTH_ROLLOUT_CANARY", "1"),
        ("BERTH_PIN_DEBOUNCE", "2s"),
    ]);
    good_pin_beside_a_crash_looper(&w, 3).await;
    let v2 = w.v2.clone();
    super::rollout::wait_stable(&w, &v2, 60).await;
    assert_eq!(halts(&w).await, 0, "a good image was halted");
    let pinned: String =
        sqlx::query_scalar("SELECT digest FROM runtime_image_pins WHERE template_name = 'agent'")
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(pinned, v2, "the pin was written back");
}

#[tokio::test]
async fn a_halted_first_pin_of_a_ring_is_removed_so_the_ring_follows_stable_again() {
    let mut w = super::World::new().await;
    // Short enough for the broken canary, long enough for the good
    // replaces after it on a loaded machine.
    w.start(&[
        ("BERTH_PROVISION_TIMEOUT", "15s"),
        ("BERTH_ROLLOUT_CANARY", "1"),
    ]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = w.insert(serde_json::json!({})).await;
        w.exec("UPDATE workspaces SET ring = 'canary' WHERE id = $1", id)
            .await;
        ids.push(id);
    }
    let v1 = w.v1.clone();
    for id in &ids {
        w.wait_row(*id, 90, "online on stable's v1", |r| {
            r.is("online", None) && r.converged()
        })
        .await;
    }
    // The canary ring's first pin names the image that is never ready.
    let broken = digest(&w, "broken").await;
    sqlx::query(
        "INSERT INTO runtime_image_pins (template_name, ring, digest, updated_by)
         VALUES ('agent', 'canary', $1, 'test')",
    )
    .bind(&broken)
    .execute(&w.pool)
    .await
    .unwrap();
    w.poll(90, "the canary pin removed", Duration::from_millis(300), || async {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runtime_image_pins WHERE template_name = 'agent' AND ring = 'canary'",
        )
        .fetch_one(&w.pool)
        .await
        .unwrap();
        (left == 0).then_some(())
    })
    .await;
    assert_eq!(halts(&w).await, 1, "the removal is on record as berth's");
    w.wait_online_on(&ids, &v1, 60, "online on v1").await;
    // Following stable again: stable's next digest reaches the ring.
    let v2 = w.v2.clone();
    pin(&w, &v2).await;
    w.wait_online_on(&ids, &v2, 120, "online on stable's v2")
        .await;
}

#[tokio::test]
async fn a_berth_killed_between_putting_the_canary_back_and_halting_tries_no_second_canary() {
    let mut w = super::World::new().await;
    w.start(&[]);
    let ids = online_all(&w, 4).await;
    let _ = pin_broken_with_a_short_deadline(&mut w, &ids).await;
    // The halt's write-back waits on a lock the test holds: berth has put
    // the canary back and decided to halt, and dies before the pin moves.
    let mut lock = w.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM runtime_image_pins WHERE template_name = 'agent' FOR UPDATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    super::wait_logged(w.berth.as_ref().unwrap(), "rollout halted", 90).await;
    w.berth.take().unwrap().kill().await;
    // The dead berth's blocked write must not land when the lock goes.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE pid <> pg_backend_pid() AND query LIKE '%UPDATE runtime_image_pins%'",
    )
    .execute(&w.pool)
    .await
    .unwrap();
    lock.rollback().await.unwrap();
    let broken = digest(&w, "broken").await;
    let pinned: String =
        sqlx::query_scalar("SELECT digest FROM runtime_image_pins WHERE template_name = 'agent'")
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(pinned, broken, "the halt did not land before the kill");

    w.start(&[
        ("BERTH_PROVISION_TIMEOUT", "8s"),
        ("BERTH_ROLLOUT_CANARY", "1"),
    ]);
    let v1 = w.v1.clone();
    wait_pin(&w, &v1, 60).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let tried = replaced(&w).await;
    assert_eq!(
        tried.len(),
        1,
        "a second canary tried the bad image: {tried:?}"
    );
    assert_eq!(halts(&w).await, 1);
    let note: String = sqlx::query_scalar("SELECT note FROM runtime_image_pin_history WHERE halt")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    let canary = berth::model::WorkspaceId(tried[0]);
    assert!(
        note.contains(&canary.id12()),
        "the halt names the canary: {note}"
    );
}

#[tokio::test]
async fn a_halt_puts_back_the_digest_the_pin_named_not_a_crash_loopers_older_one() {
    let mut w = super::World::new().await;
    w.start(&[
        ("BERTH_PROVISION_TIMEOUT", "15s"),
        ("BERTH_ROLLOUT_CANARY", "1"),
    ]);
    // A workspace crash looping by itself stays on v1 through a good pin.
    let (looping, ids) = good_pin_beside_a_crash_looper(&w, 2).await;
    let v2 = w.v2.clone();
    // The bad pin's rollout opens with the looping one, still on v1 (the
    // others are paused until its replace is under way): the halt still
    // puts back v2, what the pin named and the others run.
    for id in &ids {
        w.exec("UPDATE workspaces SET paused = true WHERE id = $1", *id)
            .await;
    }
    let broken = digest(&w, "broken").await;
    pin(&w, &broken).await;
    w.poll(
        60,
        "the looping one's replace under way",
        Duration::from_millis(100),
        || async {
            let state: Option<String> =
                sqlx::query_scalar("SELECT rollout->>'state' FROM workspaces WHERE id = $1")
                    .bind(looping.0)
                    .fetch_one(&w.pool)
                    .await
                    .unwrap();
            (state.as_deref() == Some("replacing")).then_some(())
        },
    )
    .await;
    for id in &ids {
        w.exec("UPDATE workspaces SET paused = false WHERE id = $1", *id)
            .await;
    }
    wait_pin(&w, &v2, 120).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &ids {
        let row = w.row(*id).await;
        assert_eq!(
            row.runtime_image_digest.as_deref(),
            Some(v2.as_str()),
            "{row:?}"
        );
    }
}

#[tokio::test]
async fn a_workspace_undone_by_its_own_edit_halts_no_later_good_pin() {
    // A row edited into one that never becomes ready is put back
    // (online/rolled_back); the next good pins carry its edit along and
    // fail on it: not the image's fault, so no halt, and the pin never
    // swings back and forth.
    let mut w = super::World::new().await;
    w.start(&[
        ("BERTH_PROVISION_TIMEOUT", "15s"),
        ("BERTH_ROLLOUT_CANARY", "1"),
    ]);
    let ids = online_all(&w, 2).await;
    let own = ids[0];
    w.exec(
        r#"UPDATE workspaces SET env = '{"AGENT_NEVER_READY": "1"}' WHERE id = $1"#,
        own,
    )
    .await;
    w.wait_row(own, 60, "its own edit undone", |r| {
        r.is("online", Some("rolled_back"))
    })
    .await;
    let v2 = w.v2.clone();
    pin(&w, &v2).await;
    super::rollout::wait_stable(&w, &v2, 90).await;
    let v1 = w.v1.clone();
    pin(&w, &v1).await;
    super::rollout::wait_stable(&w, &v1, 90).await;
    assert_eq!(halts(&w).await, 0, "a good image was halted");
    w.wait_row(ids[1], 60, "the other on v1", |r| {
        r.is("online", None) && r.runtime_image_digest.as_deref() == Some(v1.as_str())
    })
    .await;
}

/// Sets the `agent` runtime's provision timeout (`None`: berth's own).
async fn deadline_of_agent(w: &super::World, timeout: Option<&str>) {
    sqlx::query("UPDATE runtimes SET provision_timeout = $1::interval WHERE name = 'agent'")
        .bind(timeout)
        .execute(&w.pool)
        .await
        .unwrap();
}

/// Berth with canary 1, and three workspaces online whose agents answer
/// 5 s after they start.
async fn three_ready_after_five_seconds() -> (super::World, Vec<berth::model::WorkspaceId>) {
    let mut w = super::World::new().await;
    w.start(&[("BERTH_ROLLOUT_CANARY", "1")]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            w.insert(serde_json::json!({"AGENT_READY_AFTER": "5"}))
                .await,
        );
    }
    for id in &ids {
        w.wait_row(*id, 90, "online", |r| r.is("online", None) && r.converged())
            .await;
    }
    (w, ids)
}

/// A halt that cannot write back (the digest before it was halted by
/// berth too) leaves the pin on the halted digest: pinning that same
/// digest again is the operator's word to try it afresh.
#[tokio::test]
async fn a_halted_digest_left_pinned_and_pinned_again_rolls_out_afresh() {
    let (w, ids) = three_ready_after_five_seconds().await;
    let (v1, v2) = (w.v1.clone(), w.v2.clone());
    // The history says berth halted a rollout away from v1 since v1 was
    // pinned: a halt must not write v1 back.
    sqlx::query(
        "INSERT INTO runtime_image_pin_history (template_name, ring, old_digest, new_digest, updated_by, note, halt)
         VALUES ('agent', 'stable', $1, $1, 'berth', 'an earlier halt', true)",
    )
    .bind(&v1)
    .execute(&w.pool)
    .await
    .unwrap();
    deadline_of_agent(&w, Some("2 seconds")).await;
    pin(&w, &v2).await;
    super::wait_logged(
        w.berth.as_ref().unwrap(),
        "the digest before this rollout was halted by berth too",
        90,
    )
    .await;
    for id in &ids {
        w.wait_row(*id, 60, "back on v1", |r| {
            r.runtime_image_digest.as_deref() == Some(v1.as_str())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(replaced(&w).await.len(), 1, "the halt held the rest back");

    deadline_of_agent(&w, None).await;
    pin(&w, &v2).await;
    w.wait_online_on(&ids, &v2, 120, "on v2").await;
}

#[tokio::test]
async fn a_digest_pinned_again_after_its_halt_is_tried_afresh_on_every_workspace() {
    let (w, ids) = three_ready_after_five_seconds().await;
    // v2 is good, but the runtime's deadline is too short for it: the
    // canary fails and the pin is written back.
    deadline_of_agent(&w, Some("2 seconds")).await;
    let (v1, v2) = (w.v1.clone(), w.v2.clone());
    pin(&w, &v2).await;
    wait_pin(&w, &v1, 90).await;
    assert_eq!(halts(&w).await, 1);
    w.wait_online_on(&ids, &v1, 60, "back on v1, plainly online")
        .await;

    // The operator mends the deadline and pins v2 again: a new request,
    // which the first canary takes as every other workspace does.
    deadline_of_agent(&w, None).await;
    pin(&w, &v2).await;
    w.wait_online_on(&ids, &v2, 120, "on v2").await;
    assert_eq!(halts(&w).await, 1, "the second rollout halted nothing");
}

#[tokio::test]
async fn a_workspace_an_earlier_rollout_left_undone_counts_as_a_canary_of_the_next() {
    // A failure share of 1 never halts: the first two rollouts leave the
    // one workspace undone, each on its image.
    let mut w = super::World::new().await;
    let tolerant = [
        ("BERTH_ROLLOUT_CANARY", "1"),
        ("BERTH_ROLLOUT_MAX_FAILURE_RATIO", "1"),
    ];
    w.start(&tolerant);
    let id = w
        .insert(serde_json::json!({"AGENT_READY_AFTER": "5"}))
        .await;
    w.wait_row(id, 90, "online", |r| r.is("online", None) && r.converged())
        .await;
    deadline_of_agent(&w, Some("2 seconds")).await;
    let undone = |r: &super::RowView| r.is("online", Some("rolled_back"));
    let v2 = w.v2.clone();
    pin(&w, &v2).await;
    w.wait_row(id, 60, "v2 undone", undone).await;
    let first = w
        .count_events_like(id, "status", "online/rolled_back")
        .await;

    // The next image fails on it too: a failure of that image, counted
    // (the workspace ran its own spec well before v2), not one of a
    // workspace broken by itself.
    let broken = digest(&w, "broken").await;
    pin(&w, &broken).await;
    w.poll(60, "broken undone", Duration::from_millis(300), || async {
        let now = w
            .count_events_like(id, "status", "online/rolled_back")
            .await;
        (now > first && undone(&w.row(id).await)).then_some(())
    })
    .await;
    let log = std::fs::read_to_string(&w.berth.as_ref().unwrap().log).unwrap();
    assert!(
        !log.contains("broken by itself before it"),
        "the failure was not counted:\n{log}"
    );

    // A berth started anew reads the same from the trail, and with the
    // default share a failure of the next pin on it halts that pin.
    w.berth.take().unwrap().kill().await;
    w.start(&[("BERTH_ROLLOUT_CANARY", "1")]);
    assert_eq!(halts(&w).await, 0);
    pin(&w, &v2).await;
    w.poll(90, "the pin halted", Duration::from_millis(300), || async {
        (halts(&w).await == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_halt_after_the_pin_moved_on_from_an_unproven_digest_writes_back_what_ran() {
    let mut w = super::World::new().await;
    w.start(&[]);
    let ids = online_all(&w, 3).await;
    // A second image that never becomes ready, under a digest of its own.
    let registry = crate::harness::env().registry;
    let run = std::env::var("BERTH_TEST_RUN_ID").unwrap();
    let tag = format!("broken2-{}", crate::harness::unique());
    let target = format!("{registry}/berth-test/agent:{tag}");
    crate::retention::build(
        &format!(
            "FROM {registry}/berth-test/agent:broken\nLABEL berth.test-run={run} berth.test.tag={tag}\n"
        ),
        &target,
    )
    .await;
    crate::act::docker_cli(&["push", &target]).await;
    let broken2 = digest(&w, &tag).await;

    // The operator pins a bad digest and, while its canary waits, moves
    // the pin on to another bad one: the first never ran anywhere.
    pin_broken_with_a_short_deadline(&mut w, &ids).await;
    let broken = digest(&w, "broken").await;
    canary_under_way(&w, &ids, &broken).await;
    pin(&w, &broken2).await;

    // The halt writes back what the workspaces ran, not the unproven pin
    // before it.
    let v1 = w.v1.clone();
    wait_pin(&w, &v1, 120).await;
    assert_eq!(halts(&w).await, 1);
    for id in &ids {
        w.wait_row(*id, 60, "on v1", |r| {
            r.runtime_image_digest.as_deref() == Some(v1.as_str())
                && r.status.as_deref() == Some("online")
        })
        .await;
    }
}

/// A row inserted just after a pin edit is created on the digest the pin
/// names now, once: berth rereads the pins before it plans, so the new
/// workspace is neither created on the old digest nor replaced after.
#[tokio::test]
async fn a_workspace_inserted_right_after_a_pin_edit_is_created_on_the_new_digest() {
    let mut w = super::World::new().await;
    w.start(&[]);
    let first = online_all(&w, 1).await;
    pin(&w, &w.v2).await;
    let id = w.insert(serde_json::json!({})).await;
    w.wait_online_on(&[id], &w.v2, 90, "the new workspace online on v2")
        .await;
    w.wait_online_on(&first, &w.v2, 90, "the first workspace rolled to v2")
        .await;
    assert_eq!(w.count_events(id, "create").await, 1, "created once");
    let stops = w.count_events(id, "stop").await;
    assert_eq!(stops, 0, "the new workspace was never replaced");
}
