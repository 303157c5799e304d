//! What berth does not own under a workspace's names: never touched,
//! never shown as the workspace's.

use berth::model::{LABEL_HOST, LABEL_MANAGED, LABEL_WORKSPACE, WorkspaceId};
use bollard::models::ContainerCreateBody;

use super::World;
use crate::harness;

#[tokio::test]
async fn another_hosts_container_under_the_name_is_a_conflict_not_the_rows_container() {
    let mut w = World::new().await;
    let id = WorkspaceId(uuid::Uuid::new_v4());
    let image = format!("{}/berth-test/agent:plain", harness::env().registry);
    harness::docker::pull(&w.scope.docker, &image).await;
    let mut labels = w.scope.labels();
    for (k, v) in [
        (LABEL_MANAGED, "true"),
        (LABEL_HOST, "another-host"),
        (LABEL_WORKSPACE, &id.to_string()),
    ] {
        labels.insert(k.to_string(), v.to_string());
    }
    let theirs = w
        .scope
        .run(
            &id.container_name(),
            ContainerCreateBody {
                image: Some(image),
                labels: Some(labels),
                ..Default::default()
            },
        )
        .await;
    w.start(&[]);
    sqlx::query(
        "INSERT INTO workspaces (id, name, runtime, host, config_files)
         VALUES ($1, 't', 'agent', $2, '{\"config.yaml\": \"name: t\\n\"}')",
    )
    .bind(id.0)
    .bind(&w.host)
    .execute(&w.pool)
    .await
    .unwrap();
    let row = w
        .wait_row(id, 30, "name_conflict", |r| {
            r.is("failed", Some("name_conflict"))
        })
        .await;
    assert_eq!(row.container_id, None, "{row:?}");
    assert_eq!(row.runtime_image_id, None, "{row:?}");
    assert_eq!(row.url, None, "{row:?}");
    let c = w.container(id).await.unwrap();
    assert_eq!(c.id.as_deref(), Some(theirs.as_str()));
    assert!(super::running(Some(&c)), "left running as it was");
}
