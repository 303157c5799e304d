//! Passes waiting for another pass's build of the same runtime do no work,
//! so they leave their concurrency slots to other workspaces.

use std::time::Duration;

use berth::model::WorkspaceId;

use super::secrets::stand_in;
use super::{Templates, add_runtime, insert_on, start_local};
use crate::controller::World;
use crate::harness;

#[tokio::test]
async fn passes_parked_behind_a_build_leave_their_slots_to_other_workspaces() {
    // A template server that holds each request for 100 s: the runtime's
    // HEAD check (and so its build) hangs that long.
    let (port, heads) = stand_in(Duration::from_secs(100)).await;
    let mut t = Templates::new();
    let mut w = World::new().await;
    let rt = t.runtime();
    add_runtime(&w, &rt).await;
    let prefix = format!("http://127.0.0.1:{port}/template-");
    start_local(
        &mut w,
        &t,
        &[
            ("MOLECULE_LOCAL_TEMPLATE_REPO_PREFIX", prefix.as_str()),
            ("BERTH_CONCURRENCY", "2"),
        ],
    );
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(insert_on(&w, &rt).await);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while heads.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no HEAD check began");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A workspace with an explicit image (pulled, not built) gets a slot
    // while three passes wait on the one hanging check.
    let image = format!("{}/berth-test/agent:v1", harness::env().registry);
    let other: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO workspaces (name, runtime, host, image, config_files)
         VALUES ('other', 'agent', $1, $2, '{\"config.yaml\": \"name: o\\n\"}') RETURNING id",
    )
    .bind(&w.host)
    .bind(&image)
    .fetch_one(&w.pool)
    .await
    .unwrap();
    // Alone this takes seconds; the bound leaves room for a loaded machine
    // and stays well inside the hold.
    w.wait_row(
        WorkspaceId(other),
        75,
        "online beside the hanging build",
        |r| r.is("online", None),
    )
    .await;
    assert_eq!(heads.lock().unwrap().len(), 1, "one check for the runtime");
    for id in &waiting {
        let row = w.row(*id).await;
        assert!(row.is("provisioning", Some("building")), "{row:?}");
    }
}
