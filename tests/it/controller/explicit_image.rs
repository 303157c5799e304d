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
