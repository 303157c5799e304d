//! A row's explicit image: a tag named while the row's pinned container
//! still runs is resolved as that tag, never taken for the pin's digest.

use serde_json::json;

use super::World;

#[tokio::test]
async fn a_tag_named_during_a_replace_from_the_pin_runs_the_tags_image() {
    let mut w = World::new().await;
    // Rereads often, so one falls between the passes of the change.
    w.start(&[("BERTH_RESYNC_INTERVAL", "300ms")]);
    let id = w.insert(json!({})).await;
    w.wait_row(id, 60, "online on the pin", |r| {
        r.is("online", None) && r.converged()
    })
    .await;
    // A replace that waits long for readiness: rereads (every 3 s) see the
    // new container, made from the pin, under the workspace's name.
    w.exec(
        r#"UPDATE workspaces SET env = '{"AGENT_READY_AFTER": "12"}' WHERE id = $1"#,
        id,
    )
    .await;
    w.wait_row(id, 30, "the replace waiting for readiness", |r| {
        r.status_reason.as_deref() == Some("waiting_ready")
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let v2_tag = format!("{}/berth-test/agent:v2", crate::harness::env().registry);
    sqlx::query("UPDATE workspaces SET image = $2 WHERE id = $1")
        .bind(id.0)
        .bind(&v2_tag)
        .execute(&w.pool)
        .await
        .unwrap();
    let v2 = w.v2.clone();
    let row = w
        .wait_row(id, 90, "online on the tag", |r| {
            r.is("online", None) && r.converged()
        })
        .await;
    assert_eq!(
        row.runtime_image_digest.as_deref(),
        Some(v2.as_str()),
        "the tag's image, not the pin's"
    );
    let image = w
        .container(id)
        .await
        .unwrap()
        .config
        .unwrap()
        .image
        .unwrap();
    assert_eq!(image, format!("{v2_tag}@{v2}"));
}

#[tokio::test]
async fn an_image_that_appears_after_the_timeout_is_replaced_onto_with_a_whole_timeout() {
    let mut w = World::new().await;
    w.start(&[("BERTH_PROVISION_TIMEOUT", "15s")]);
    let id = w.insert(json!({})).await;
    w.wait_row(id, 60, "online on the pin", |r| {
        r.is("online", None) && r.converged()
    })
    .await;
    let registry = crate::harness::env().registry;
    let late = format!(
        "{registry}/berth-test/late-{}/agent:v2",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    sqlx::query("UPDATE workspaces SET image = $2 WHERE id = $1")
        .bind(id.0)
        .bind(&late)
        .execute(&w.pool)
        .await
        .unwrap();
    w.wait_row(id, 30, "the change blocked", |r| {
        r.is("degraded", Some("change_blocked"))
    })
    .await;
    // The old container, stopped by hand while the change waits, is
    // started again and serves on.
    w.stop_by_hand(id).await;
    w.wait_container(id, 30, "the old container started again", super::running)
        .await;
    // Past the provision timeout, the image appears.
    tokio::time::sleep(std::time::Duration::from_secs(15)).await;
    assert!(w.row(id).await.is("degraded", Some("change_blocked")));
    let source = format!("{registry}/berth-test/agent:v2");
    crate::act::docker_cli(&["pull", &source]).await;
    crate::act::docker_cli(&["tag", &source, &late]).await;
    crate::act::docker_cli(&["push", &late]).await;
    crate::act::docker_cli(&["rmi", &late]).await;
    // The agent is ready after 2 s of uptime: a replace timed from the
    // first try would be undone at once.
    let v2 = w.v2.clone();
    w.wait_row(id, 60, "online on the late image", |r| {
        r.is("online", None) && r.runtime_image_digest.as_deref() == Some(v2.as_str())
    })
    .await;
    assert_eq!(
        w.count_events_like(id, "status", "%rolled_back%").await,
        0,
        "the replace onto the late image was undone"
    );
}
