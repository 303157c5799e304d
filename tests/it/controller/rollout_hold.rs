//! A workspace whose image change waits for its wave is held on the image
//! it runs, not frozen: a container stopped by hand is started again and
//! an unpaused row says so at once, also when its own change (an env
//! edit) waits to go with the image. A canary paused while it is judged
//! keeps its place: no second workspace gets the image meanwhile.

use std::time::Duration;

use berth::model::WorkspaceId;
use serde_json::json;

use super::World;
use super::rollout::{
    canary_under_way, containers, digest, halted_on_the_canary, online_all, pin,
    pin_broken_with_a_short_deadline, replaced,
};

/// Whether the workspace's container runs now.
async fn running(w: &World, id: WorkspaceId) -> bool {
    w.container(id)
        .await
        .and_then(|c| c.state)
        .and_then(|s| s.running)
        == Some(true)
}

#[tokio::test]
async fn a_workspace_waiting_for_its_wave_is_started_and_unpaused_meanwhile() {
    let mut w = World::new().await;
    w.start(&[
        ("BERTH_ROLLOUT_CANARY", "1"),
        ("BERTH_ROLLOUT_MAX_PARALLEL", "1"),
    ]);
    // Each replace waits half a minute for readiness: the canary is still
    // judged while the others are looked at.
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(w.insert(json!({"AGENT_READY_AFTER": "30"})).await);
    }
    for id in &ids {
        w.wait_row(*id, 120, "online", |r| {
            r.is("online", None) && r.converged()
        })
        .await;
    }
    let (v1, v2) = (w.v1.clone(), w.v2.clone());
    pin(&w, &v2).await;
    let canary = canary_under_way(&w, &ids, &v2).await;
    let waiting: Vec<WorkspaceId> = ids.iter().copied().filter(|id| *id != canary).collect();
    let (stopped, paused, edited) = (waiting[0], waiting[1], waiting[2]);
    let edited_before = w.container(edited).await.and_then(|c| c.id);

    w.stop_by_hand(stopped).await;
    w.exec("UPDATE workspaces SET paused = true WHERE id = $1", paused)
        .await;
    // An env edit replaces the container: it goes with the image, in the
    // workspace's wave, not on the image it runs now.
    w.exec(
        "UPDATE workspaces SET env = env || '{\"EDITED\": \"1\"}' WHERE id = $1",
        edited,
    )
    .await;
    w.wait_row(paused, 30, "paused", |r| r.is("paused", None))
        .await;
    w.exec("UPDATE workspaces SET paused = false WHERE id = $1", paused)
        .await;

    w.poll(
        20,
        "the stopped container started again",
        Duration::from_millis(200),
        || async { running(&w, stopped).await.then_some(()) },
    )
    .await;
    for id in [stopped, paused] {
        w.wait_row(id, 20, "online again on v1, before its wave", |r| {
            r.is("online", None)
                && r.converged()
                && r.runtime_image_digest.as_deref() == Some(v1.as_str())
        })
        .await;
    }
    assert!(
        w.has_prev(canary).await,
        "the canary is still judged: the two did not wait for the wave"
    );
    // The edited one says its change waits, not converged; paused and
    // unpaused, it says so again at once, and its container, stopped by
    // hand, is started again as it is.
    let waits = |r: &super::RowView| {
        r.is("online", None)
            && !r.converged()
            && r.last_error
                .as_deref()
                .is_some_and(|e| e.contains("in its rollout wave"))
    };
    w.wait_row(edited, 20, "its change waiting, said", waits)
        .await;
    w.exec("UPDATE workspaces SET paused = true WHERE id = $1", edited)
        .await;
    w.wait_row(edited, 20, "paused", |r| r.is("paused", None))
        .await;
    w.exec("UPDATE workspaces SET paused = false WHERE id = $1", edited)
        .await;
    w.wait_row(edited, 20, "unpaused, its change waiting", waits)
        .await;
    w.stop_by_hand(edited).await;
    w.poll(
        20,
        "the edited one's container started again",
        Duration::from_millis(200),
        || async { running(&w, edited).await.then_some(()) },
    )
    .await;
    assert!(
        w.has_prev(canary).await,
        "the canary is still judged: the edited one did not wait for the wave"
    );
    assert_eq!(
        w.container(edited).await.and_then(|c| c.id),
        edited_before,
        "the edited workspace waits for its wave"
    );
    assert_eq!(replaced(&w).await, vec![canary.0], "only the canary got v2");
}

#[tokio::test]
async fn a_canary_paused_while_it_is_judged_keeps_its_place() {
    let mut w = World::new().await;
    w.start(&[]);
    let ids = online_all(&w, 3).await;
    let before = pin_broken_with_a_short_deadline(&mut w, &ids).await;
    let broken = digest(&w, "broken").await;
    let canary = canary_under_way(&w, &ids, &broken).await;
    w.exec("UPDATE workspaces SET paused = true WHERE id = $1", canary)
        .await;
    // Past the canary's provision deadline (8 s): berth neither judges
    // the paused canary nor hands its place to another workspace.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        replaced(&w).await,
        vec![canary.0],
        "a second canary was tried"
    );
    let state: Option<String> =
        sqlx::query_scalar("SELECT rollout->>'state' FROM workspaces WHERE id = $1")
            .bind(canary.0)
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(
        state.as_deref(),
        Some("replacing"),
        "the paused canary's row says it holds its place"
    );
    let others: Vec<usize> = (0..ids.len()).filter(|i| ids[*i] != canary).collect();
    let now = containers(&w, &ids).await;
    for i in &others {
        assert_eq!(
            now[*i], before[*i],
            "a workspace beside the canary was touched"
        );
    }

    // Unpaused, the canary is judged: it failed, and the rollout halts.
    w.exec("UPDATE workspaces SET paused = false WHERE id = $1", canary)
        .await;
    halted_on_the_canary(&w).await;
    let v1 = w.v1.clone();
    w.wait_row(canary, 60, "back on v1", |r| {
        r.runtime_image_digest.as_deref() == Some(v1.as_str())
    })
    .await;
    let now = containers(&w, &ids).await;
    for i in &others {
        assert_eq!(
            now[*i], before[*i],
            "a workspace beside the canary was touched"
        );
    }
    assert_eq!(replaced(&w).await, vec![canary.0]);
}
