//! The audit trail is kept for `BERTH_EVENTS_RETENTION`: a running berth
//! deletes older events and keeps the rest.

use std::time::{Duration, Instant};

use crate::controller::World;

async fn event(w: &World, id: uuid::Uuid, age: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO workspace_events (workspace_id, at, action, reason, host, instance, epoch)
         VALUES ($1, now() - interval '{age}', 'note', 'aged {age}', 'h', 'test', 1)"
    )))
    .bind(id)
    .execute(&w.pool)
    .await
    .unwrap();
}

async fn reasons(w: &World, id: uuid::Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT reason FROM workspace_events WHERE workspace_id = $1 ORDER BY at")
        .bind(id)
        .fetch_all(&w.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn events_older_than_the_retention_are_pruned_and_newer_ones_kept() {
    let mut w = World::new().await;
    let id = uuid::Uuid::new_v4();
    event(&w, id, "40 days").await;
    event(&w, id, "3 days").await;
    event(&w, id, "1 hour").await;
    w.start(&[("BERTH_EVENTS_RETENTION", "2d")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = reasons(&w, id).await;
        if left == ["aged 1 hour"] {
            break;
        }
        assert!(Instant::now() < deadline, "events left: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
