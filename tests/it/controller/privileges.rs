//! `berth run` under a role of its own: one that may only read is refused
//! at start with the grants it lacks, and one given exactly those grants
//! converges a workspace and holds the lease, started as by default (with
//! nothing to migrate, the migration step asks nothing of it).

use serde_json::json;

use super::World;
use crate::harness::berth;
use crate::harness::process::Berth;

#[tokio::test]
async fn a_read_only_role_is_refused_at_start_with_the_grants_that_let_it_run() {
    let mut w = World::new().await;
    let role = format!(
        "berth_ro_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"
    )))
    .execute(&w.pool)
    .await
    .unwrap();
    let (base, name) = w.db.url.rsplit_once('/').unwrap();
    let at = base
        .find('@')
        .map_or(base.find("//").unwrap() + 2, |i| i + 1);
    let url = format!("postgres://{role}@{}/{name}", &base[at..]);
    let mut env = w.env();
    env.retain(|(k, _)| k != "DATABASE_URL");
    env.push(("DATABASE_URL".into(), url.clone()));
    let borrowed: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    // Reading is all it may do: the commands that read work, `berth run`
    // stops before it takes the lease.
    let (code, out, err) = berth(&["status"], &borrowed).await;
    assert_eq!(code, 0, "status as a reader\nstdout: {out}\nstderr: {err}");
    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        berth(&["run", "--no-migrate"], &borrowed),
    );
    let (code, out, err) = refused.await.expect("berth run stops at once");
    assert_eq!(code, 64, "stdout: {out}\nstderr: {err}");
    let said = format!("{out}{err}");
    let grants: Vec<String> = said
        .split_once("run: ")
        .map(|(_, rest)| rest.split_once('"').map_or(rest, |(g, _)| g))
        .unwrap_or_default()
        .split("; ")
        .map(str::to_string)
        .collect();
    // Exactly what a pass, the lease, the trail, a halt and the image
    // sweep write with, no more (the pins are inserted by `berth pin`).
    let wanted: Vec<String> = [
        "UPDATE, DELETE ON runtime_image_pins",
        "INSERT, UPDATE ON runtime_image_pin_history",
        "INSERT, DELETE ON workspace_events",
        "INSERT, UPDATE ON host_leases",
        "INSERT, UPDATE, DELETE ON host_images",
        // The status columns alone: a column grant is what berth asks.
        "UPDATE (status, status_reason, status_changed_at, container_id, runtime_image_digest, \
         runtime_image_id, url, observed_generation, restart_count, last_error, rollout) ON workspaces",
        "USAGE ON SEQUENCE public.runtime_image_pin_history_id_seq",
        "USAGE ON SEQUENCE public.workspace_events_id_seq",
    ]
    .iter()
    .map(|g| format!("GRANT {g} TO {role}"))
    .collect();
    assert_eq!(grants, wanted);
    let holders: i64 = sqlx::query_scalar("SELECT count(*) FROM host_leases WHERE host = $1")
        .bind(&w.host)
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert_eq!(holders, 0, "a refused berth took no lease");

    // Exactly those grants are enough for a pass, its trail and the lease,
    // and for `berth run` as it is started by default, migrating: with
    // nothing pending, it asks nothing of the role that only the owner of
    // the tables may do.
    for grant in &grants {
        sqlx::raw_sql(sqlx::AssertSqlSafe(grant.clone()))
            .execute(&w.pool)
            .await
            .unwrap_or_else(|e| panic!("{grant}: {e}"));
    }
    w.berth = Some(Berth::start_with(&["run"], &env));
    let id = w.insert(json!({})).await;
    w.wait_row(id, 60, "online", |r| r.is("online", None) && r.converged())
        .await;
    assert!(w.count_events(id, "create").await >= 1);
    let held: Option<String> = sqlx::query_scalar("SELECT holder FROM host_leases WHERE host = $1")
        .bind(&w.host)
        .fetch_optional(&w.pool)
        .await
        .unwrap();
    assert!(held.is_some(), "the granted role holds the lease");
    if let Some(b) = w.berth.take() {
        b.kill().await;
    }
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP OWNED BY {role}; DROP ROLE {role}"
    )))
    .execute(&w.pool)
    .await;
}
