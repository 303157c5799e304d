//! A `restart_epoch` bump restarts the workspace once, in place, with the
//! row's files written into /configs again first: how an edited
//! `auth_token` or `config_files` reaches a running workspace. A
//! container that was ready and turns unhealthy is restarted in place too.

use serde_json::json;

use super::World;

#[tokio::test]
async fn a_restart_epoch_bump_rewrites_the_files_and_restarts_in_place() {
    let mut w = World::new().await;
    let id = w.insert(json!({})).await;
    w.exec(
        "UPDATE workspaces SET auth_token = 'tok-1' WHERE id = $1",
        id,
    )
    .await;
    w.start(&[]);
    w.wait_row(id, 60, "online", |r| r.is("online", None) && r.converged())
        .await;
    assert_eq!(w.sh(id, "cat /configs/.auth_token").await, "tok-1");
    let before = w.container(id).await.unwrap();

    // A file edit alone is no spec change: the container keeps running
    // with what it started with.
    w.exec(
        r#"UPDATE workspaces SET auth_token = 'tok-2',
               config_files = '{"config.yaml": "name: t\n", "extra.txt": "new"}'
            WHERE id = $1"#,
        id,
    )
    .await;
    w.wait_row(id, 30, "the edit observed", |r| r.converged())
        .await;
    assert_eq!(w.sh(id, "cat /configs/.auth_token").await, "tok-1");

    w.exec(
        "UPDATE workspaces SET restart_epoch = restart_epoch + 1 WHERE id = $1",
        id,
    )
    .await;
    let started = before.state.as_ref().unwrap().started_at.clone();
    let after = w
        .wait_container(id, 60, "restarted", |c| {
            c.is_some_and(|c| c.state.as_ref().unwrap().started_at != started)
        })
        .await
        .unwrap();
    assert_eq!(after.id, before.id, "restarted in place, not replaced");
    assert_eq!(w.sh(id, "cat /configs/.auth_token").await, "tok-2");
    assert_eq!(w.sh(id, "cat /configs/extra.txt").await, "new");
    w.wait_row(id, 60, "online again", |r| {
        r.is("online", None) && r.converged()
    })
    .await;
    assert_eq!(
        w.count_events(id, "write_files").await,
        2,
        "create, restart"
    );
    assert_eq!(w.count_events(id, "restart").await, 1);

    // A new berth, and an edit of another column: the restart is done and
    // is not done again.
    w.berth.take().unwrap().kill().await;
    w.start(&[]);
    w.exec("UPDATE workspaces SET name = 'renamed' WHERE id = $1", id)
        .await;
    w.wait_row(id, 30, "the rename observed", |r| {
        r.is("online", None) && r.converged()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let now = w.container(id).await.unwrap();
    assert_eq!(
        now.state.unwrap().started_at,
        after.state.unwrap().started_at,
        "restarted again"
    );
    assert_eq!(w.count_events(id, "restart").await, 1);
}

#[tokio::test]
async fn a_ready_container_that_turns_unhealthy_is_restarted_after_the_provision_timeout() {
    let mut w = World::new().await;
    w.start(&[("BERTH_PROVISION_TIMEOUT", "6s")]);
    let id = w.insert(json!({})).await;
    w.wait_row(id, 60, "online", |r| r.is("online", None) && r.converged())
        .await;
    let before = w.container(id).await.unwrap();
    // The agent stops serving: its health check fails from now on.
    w.sh(id, "kill $(pidof httpd)").await;
    let row = w
        .wait_row(id, 30, "online, saying it is unhealthy", |r| {
            r.is("online", None)
                && r.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("reports unhealthy since"))
        })
        .await;
    assert_eq!(row.container_id, before.id, "the same container");
    // Restarted in place once the timeout passes, and healthy again.
    w.wait_row(id, 60, "online and healthy again", |r| {
        r.is("online", None) && r.last_error.is_none()
    })
    .await;
    let after = w.container(id).await.unwrap();
    assert_eq!(after.id, before.id, "restarted, not replaced");
    assert_ne!(
        after.state.unwrap().started_at,
        before.state.unwrap().started_at
    );
    let said = w
        .count_events_like(
            id,
            "restart",
            "restart: its health check has reported unhealthy%",
        )
        .await;
    assert_eq!(said, 1, "the restart and why are on the trail");
}
