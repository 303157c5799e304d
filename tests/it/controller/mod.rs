//! `berth run` end to end: rows in a real PostgreSQL, containers on the
//! real engine, images from the run's registry.

mod explicit_image;
mod failures;
mod images;
mod lifecycle;
mod outage;
mod privileges;
mod restart;
mod rollout;
mod rollout_edges;
mod rollout_hold;
mod strangers;

use std::time::{Duration, Instant};

use berth::model::WorkspaceId;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::InspectContainerOptions;
use sqlx::PgPool;

use crate::harness::process::{Berth, base_env};
use crate::harness::{self, DockerScope, TestDb};

/// The row columns the tests look at.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RowView {
    pub status: Option<String>,
    pub status_reason: Option<String>,
    pub container_id: Option<String>,
    pub url: Option<String>,
    pub runtime_image_digest: Option<String>,
    pub runtime_image_id: Option<String>,
    pub observed_generation: Option<i64>,
    pub generation: i64,
    pub last_error: Option<String>,
}

impl RowView {
    pub fn is(&self, status: &str, reason: Option<&str>) -> bool {
        self.status.as_deref() == Some(status) && self.status_reason.as_deref() == reason
    }

    pub fn converged(&self) -> bool {
        self.observed_generation == Some(self.generation)
    }
}

/// One test's database, Docker scope, berth host id and berth process.
/// Fields drop in order: berth is killed before the scope cleans up, so
/// it cannot recreate what the cleanup removes.
pub struct World {
    pub berth: Option<Berth>,
    pub db: TestDb,
    pub pool: PgPool,
    pub scope: DockerScope,
    pub host: String,
    /// The digests of the test agent's v1 and v2 images.
    pub v1: String,
    pub v2: String,
}

impl World {
    /// A migrated database with runtime `agent` pinned (ring stable) to the
    /// v1 test image.
    pub async fn new() -> World {
        let db = TestDb::migrated().await;
        let pool = db.pool().await;
        let mut scope = DockerScope::new().await;
        let host = scope.host();
        let registry = harness::env().registry;
        let digest = |tag: &'static str| {
            let docker = scope.docker.clone();
            let reference = format!("{registry}/berth-test/agent:{tag}");
            async move {
                docker
                    .inspect_registry_image(&reference, None)
                    .await
                    .unwrap()
                    .descriptor
                    .digest
                    .unwrap()
            }
        };
        let (v1, v2) = (digest("v1").await, digest("v2").await);
        sqlx::query("INSERT INTO runtimes (name, image_repository) VALUES ('agent', 'agent')")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO runtime_image_pins (template_name, ring, digest) VALUES ('agent', 'stable', $1)",
        )
        .bind(&v1)
        .execute(&pool)
        .await
        .unwrap();
        World {
            berth: None,
            db,
            pool,
            scope,
            host,
            v1,
            v2,
        }
    }

    pub fn env(&self) -> Vec<(String, String)> {
        base_env(&self.db, &self.host)
    }

    /// Starts berth with the base settings and `extra` on top.
    pub fn start(&mut self, extra: &[(&str, &str)]) {
        let mut env = self.env();
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        self.berth = Some(Berth::start(&env));
    }

    /// Inserts a running workspace of runtime `agent` with a config.yaml;
    /// `env` is the row's env object.
    pub async fn insert(&self, env: serde_json::Value) -> WorkspaceId {
        let id: uuid::Uuid = sqlx::query_scalar(
            "INSERT INTO workspaces (name, runtime, host, env, config_files)
             VALUES ('t', 'agent', $1, $2, '{\"config.yaml\": \"name: t\\n\"}')
             RETURNING id",
        )
        .bind(&self.host)
        .bind(env)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        WorkspaceId(id)
    }

    pub async fn exec(&self, sql: &str, id: WorkspaceId) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(id.0)
            .execute(&self.pool)
            .await
            .unwrap();
    }

    pub async fn row(&self, id: WorkspaceId) -> RowView {
        sqlx::query_as(
            "SELECT status, status_reason, container_id, url, runtime_image_digest,
                    runtime_image_id, observed_generation, generation, last_error
               FROM workspaces WHERE id = $1",
        )
        .bind(id.0)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// How many `action` events the workspace's trail holds.
    pub async fn count_events(&self, id: WorkspaceId, action: &str) -> i64 {
        self.count_events_like(id, action, "%").await
    }

    /// How many `action` events the workspace's trail holds whose reason
    /// is LIKE `reason`.
    pub async fn count_events_like(&self, id: WorkspaceId, action: &str, reason: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM workspace_events
              WHERE workspace_id = $1 AND action = $2 AND reason LIKE $3",
        )
        .bind(id.0)
        .bind(action)
        .bind(reason)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    fn log_tail(&self) -> String {
        self.berth.as_ref().map(Berth::tail).unwrap_or_default()
    }

    /// Polls the row until `done` holds; panics with the row and berth's
    /// log after `secs`.
    pub async fn wait_row(
        &self,
        id: WorkspaceId,
        secs: u64,
        what: &str,
        done: impl Fn(&RowView) -> bool,
    ) -> RowView {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let row = self.row(id).await;
            if done(&row) {
                return row;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not within {secs}s; row {row:?}\nberth log ({}):\n{}",
                    self.berth
                        .as_ref()
                        .map_or("none".into(), |b| b.log.display().to_string()),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every container of this world's host, by id: its state and start
    /// time, as the daemon lists and inspects them.
    pub async fn host_containers(&self) -> std::collections::BTreeMap<String, (String, String)> {
        use bollard::query_parameters::ListContainersOptionsBuilder;
        let filters = std::collections::HashMap::from([(
            "label".to_string(),
            vec![format!("{}={}", berth::model::LABEL_HOST, self.host)],
        )]);
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let mut out = std::collections::BTreeMap::new();
        for c in self.scope.docker.list_containers(Some(opts)).await.unwrap() {
            let id = c.id.unwrap_or_default();
            let inspect = self
                .scope
                .docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
                .unwrap();
            let state = inspect.state.unwrap_or_default();
            let status = format!("{:?}", state.status);
            out.insert(id, (status, state.started_at.unwrap_or_default()));
        }
        out
    }

    /// The workspace's container (by its name), if any.
    /// Asks `probe` every `every` until it answers, for at most `secs`;
    /// then fails naming `what`, with the tail of berth's log.
    pub async fn poll<T, Fut>(
        &self,
        secs: u64,
        what: &str,
        every: Duration,
        mut probe: impl FnMut() -> Fut,
    ) -> T
    where
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(answer) = probe().await {
                return answer;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not within {secs}s\n{}",
                self.berth.as_ref().map(|b| b.tail()).unwrap_or_default()
            );
            tokio::time::sleep(every).await;
        }
    }

    /// Waits until each of `ids` is plainly online on `digest`.
    pub async fn wait_online_on(&self, ids: &[WorkspaceId], digest: &str, secs: u64, what: &str) {
        for id in ids {
            self.wait_row(*id, secs, what, |r| {
                r.is("online", None) && r.runtime_image_digest.as_deref() == Some(digest)
            })
            .await;
        }
    }

    /// Whether the workspace's old container waits under `-prev`: a
    /// replace is under way (or was cut short).
    pub async fn has_prev(&self, id: WorkspaceId) -> bool {
        self.scope
            .docker
            .inspect_container(&id.prev_container_name(), None)
            .await
            .is_ok()
    }

    /// `docker stop -t 1` of the workspace's container, as an operator
    /// would.
    pub async fn stop_by_hand(&self, id: WorkspaceId) {
        let opts = bollard::query_parameters::StopContainerOptionsBuilder::new()
            .t(1)
            .build();
        self.scope
            .docker
            .stop_container(&id.container_name(), Some(opts))
            .await
            .unwrap();
    }

    /// Removes the workspace's container by hand (forced), as an operator
    /// or an accident would.
    pub async fn remove_by_hand(&self, id: WorkspaceId) {
        let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
            .force(true)
            .build();
        self.scope
            .docker
            .remove_container(&id.container_name(), Some(opts))
            .await
            .unwrap();
    }

    pub async fn container(&self, id: WorkspaceId) -> Option<ContainerInspectResponse> {
        self.scope
            .docker
            .inspect_container(&id.container_name(), None::<InspectContainerOptions>)
            .await
            .ok()
    }

    /// Polls the container until `done` holds.
    pub async fn wait_container(
        &self,
        id: WorkspaceId,
        secs: u64,
        what: &str,
        done: impl Fn(Option<&ContainerInspectResponse>) -> bool,
    ) -> Option<ContainerInspectResponse> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let c = self.container(id).await;
            if done(c.as_ref()) {
                return c;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not within {secs}s\nberth log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs `sh -c script` in the workspace's container; its stdout.
    pub async fn sh(&self, id: WorkspaceId, script: &str) -> String {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        use futures::StreamExt;
        let exec = self
            .scope
            .docker
            .create_exec(
                &id.container_name(),
                CreateExecOptions {
                    cmd: Some(vec!["sh", "-c", script]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut out = String::new();
        if let StartExecResults::Attached { mut output, .. } =
            self.scope.docker.start_exec(&exec.id, None).await.unwrap()
        {
            while let Some(Ok(chunk)) = output.next().await {
                out.push_str(&chunk.to_string());
            }
        }
        out
    }
}

/// Waits until berth's whole log (not only its tail) holds `what`.
pub async fn wait_logged(berth: &Berth, what: &str, secs: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let log = std::fs::read_to_string(&berth.log).unwrap_or_default();
        if log.contains(what) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what:?} not logged in {secs}s:\n{}",
            berth.tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Most windows that hold one instant, over the windows' starts.
pub fn most_at_once<T: PartialOrd>(windows: &[(T, T)]) -> usize {
    windows
        .iter()
        .map(|(start, _)| {
            windows
                .iter()
                .filter(|(s, e)| s <= start && start <= e)
                .count()
        })
        .max()
        .unwrap_or(0)
}

pub fn running(c: Option<&ContainerInspectResponse>) -> bool {
    c.and_then(|c| c.state.as_ref()).and_then(|s| s.running) == Some(true)
}
