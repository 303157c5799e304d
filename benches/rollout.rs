//! A pin rollout through `berth run` at each max-parallel value, next to
//! the raw Docker API doing the same per-workspace replace in the same run,
//! and how many workspaces a bad pin touches before berth halts it. It
//! prints figures; it asserts nothing.
//!
//! Needs a running test environment:
//!   scripts/testenv up .berth/test && . .berth/test/env
//!   cargo bench --bench rollout
//! BENCH_ROLLOUT_N (default 20) is the number of workspaces (and of raw
//! containers); BENCH_ROLLOUT_PARALLEL (default `1,4`) the max-parallel
//! values; BENCH_ROLLOUT_BAD_TIMEOUT (default `10s`) berth's provision
//! timeout while the bad pin rolls out (the canary fails readiness only
//! when it passes).
//!
//! berth runs with canary 1 and `BERTH_PIN_DEBOUNCE=0s`, so the figures
//! hold no debounce; its other settings are its defaults. At each
//! max-parallel value the raw side runs first, then berth, back to back.
//! The two sets of containers never run at the same time (every container
//! runs the image's 1 s health check, and two sets at once would load the
//! 2-core machines this runs on twice over): the raw set is removed after
//! its round, and berth's workspaces are hibernated (`desired_state =
//! 'stopped'`) between berth's rounds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{HealthStatusEnum, NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, InspectContainerOptions,
    RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures::StreamExt;
use sqlx::{Connection, Executor, PgPool};
use tokio::process::Child;

mod common;
use common::{count, percentile, remove_labelled, stop_berth, var, workspace_body};

/// berth's default `BERTH_STOP_TIMEOUT`, which the raw side stops with too.
const STOP_TIMEOUT_SECS: i32 = 10;
/// How long any one wait of the bench may take before it gives up.
const PATIENCE: Duration = Duration::from_secs(600);

fn parallelisms() -> Vec<usize> {
    let text = std::env::var("BENCH_ROLLOUT_PARALLEL").unwrap_or_else(|_| "1,4".into());
    let list: Vec<usize> = text
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .filter(|p| *p > 0)
        .collect();
    assert!(!list.is_empty(), "BENCH_ROLLOUT_PARALLEL={text:?}");
    list
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// What the bench made, for the cleanup: berth's objects carry
/// `berth.host=<host>`, the raw side's `berth.bench=<host>`, and the
/// database is the bench's own.
#[derive(Clone)]
struct Made {
    docker: Docker,
    host: String,
    admin_url: String,
    db_name: String,
    berth: Arc<Mutex<Option<Child>>>,
}

impl Made {
    fn raw_filter(&self) -> String {
        format!("berth.bench={}", self.host)
    }

    fn host_filter(&self) -> String {
        format!("berth.host={}", self.host)
    }

    /// Ends berth (SIGKILL, reaped, so it cannot recreate what follows
    /// removes), then removes the bench's containers, volumes, networks and
    /// database, and nothing else.
    async fn cleanup(&self) {
        let child = self.berth.lock().unwrap().take();
        if let Some(mut child) = child {
            let _ = child.kill().await;
        }
        for label in [self.host_filter(), self.raw_filter()] {
            remove_labelled(&self.docker, &label).await;
        }
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.admin_url).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name);
            let _ = admin.execute(sqlx::AssertSqlSafe(sql)).await;
        }
    }
}

struct Bench {
    made: Made,
    docker: Docker,
    pool: PgPool,
    url: String,
    registry: String,
    run: String,
    n: usize,
    v1: String,
    v2: String,
    broken: String,
    logs: PathBuf,
    admin_port: u16,
}

async fn registry_digest(docker: &Docker, registry: &str, tag: &str) -> String {
    let reference = format!("{registry}/berth-test/agent:{tag}");
    docker
        .inspect_registry_image(&reference, None)
        .await
        .unwrap()
        .descriptor
        .digest
        .unwrap()
}

/// A free loopback port for berth's admin listener (asked of the kernel,
/// then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Bench {
    async fn new(docker: Docker) -> Bench {
        let admin = var("BERTH_TEST_PG_URL");
        let registry = var("BERTH_TEST_REGISTRY");
        let run = var("BERTH_TEST_RUN_ID");
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let db_name = format!("bench_rollout_{suffix}");
        let host = format!("t{run}-rollout-{suffix}");
        let made = Made {
            docker: docker.clone(),
            host,
            admin_url: admin.clone(),
            db_name: db_name.clone(),
            berth: Arc::default(),
        };
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .await
            .unwrap();
        conn.close().await.ok();
        let url = format!("{}/{db_name}", admin.rsplit_once('/').unwrap().0);
        let pool = PgPool::connect(&url).await.unwrap();
        berth::desired::migrate(&pool).await.unwrap();
        let v1 = registry_digest(&docker, &registry, "v1").await;
        let v2 = registry_digest(&docker, &registry, "v2").await;
        let broken = registry_digest(&docker, &registry, "broken").await;
        // Both good images are local before anything is timed, for berth
        // (which then pulls nothing) and for the raw side alike.
        for digest in [&v1, &v2] {
            pull(&docker, &format!("{registry}/berth-test/agent@{digest}")).await;
        }
        sqlx::query("INSERT INTO runtimes (name, image_repository) VALUES ('agent', 'agent')")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO runtime_image_pins (template_name, digest) VALUES ('agent', $1)")
            .bind(&v1)
            .execute(&pool)
            .await
            .unwrap();
        let logs = std::env::temp_dir().join(format!("berth-bench-rollout-{suffix}"));
        std::fs::create_dir_all(&logs).unwrap();
        Bench {
            made,
            docker,
            pool,
            url,
            registry,
            run,
            n: count("BENCH_ROLLOUT_N", 20),
            v1,
            v2,
            broken,
            logs,
            admin_port: free_port(),
        }
    }

    fn host(&self) -> &str {
        &self.made.host
    }

    fn image(&self, digest: &str) -> String {
        format!("{}/berth-test/agent@{digest}", self.registry)
    }

    /// Starts `berth run` with `extra` over the bench's settings, its log
    /// in `<logs>/<phase>.log` (with berth's debug lines: one per Docker
    /// action, with its duration), and waits until `/readyz` says it holds
    /// the host with both snapshots complete.
    async fn start_berth(&self, phase: &str, extra: &[(&str, String)]) {
        let log = std::fs::File::create(self.logs.join(format!("{phase}.log"))).unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("run")
            .env("DATABASE_URL", &self.url)
            .env("BERTH_HOST_ID", self.host())
            .env(
                "MOLECULE_IMAGE_REGISTRY",
                format!("{}/berth-test", self.registry),
            )
            .env("BERTH_NETWORK", format!("bn-{}", self.host()))
            .env("BERTH_LISTEN", format!("127.0.0.1:{}", self.admin_port))
            .env("BERTH_ROLLOUT_CANARY", "1")
            .env("BERTH_PIN_DEBOUNCE", "0s")
            .env("BERTH_LEASE_TTL", "5s")
            .env("BERTH_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,berth=debug")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        *self.made.berth.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.berth_ready().await {
            assert!(
                Instant::now() < deadline,
                "berth ({phase}) was not ready within 60 s; see {}",
                self.logs.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET /readyz` answers 200.
    async fn berth_ready(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.admin_port)).await else {
            return false;
        };
        let request = "GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if s.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200")
    }

    /// Stops berth with SIGTERM (it drains and releases the lease, so the
    /// next one takes the host at once); SIGKILL after 40 s.
    async fn stop_berth(&self) {
        let child = self.made.berth.lock().unwrap().take();
        if let Some(child) = child {
            stop_berth(child).await;
        }
    }

    async fn insert(&self) {
        let mut tx = self.pool.begin().await.unwrap();
        for _ in 0..self.n {
            sqlx::query(
                "INSERT INTO workspaces (name, runtime, host, config_files)
                 VALUES ('b', 'agent', $1, '{\"config.yaml\": \"name: b\\n\"}')",
            )
            .bind(self.host())
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }

    async fn ids(&self) -> Vec<uuid::Uuid> {
        sqlx::query_scalar("SELECT id FROM workspaces WHERE host = $1 ORDER BY id")
            .bind(self.host())
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// Sets every workspace's `desired_state`.
    async fn set_desired(&self, state: &str) {
        sqlx::query(
            "UPDATE workspaces SET desired_state = $2 WHERE host = $1 AND desired_state <> $2",
        )
        .bind(self.host())
        .bind(state)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// Polls until every row is stopped and converged.
    async fn wait_all_stopped(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let stopped: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM workspaces
                  WHERE host = $1 AND status = 'stopped' AND observed_generation = generation",
            )
            .bind(self.host())
            .fetch_one(&self.pool)
            .await
            .unwrap();
            if stopped as usize >= self.n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{stopped} of {} rows stopped; see {}",
                self.n,
                self.logs.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sets the pin; the instant just before the UPDATE was sent.
    async fn pin(&self, digest: &str) -> Instant {
        let t0 = Instant::now();
        sqlx::query(
            "UPDATE runtime_image_pins SET digest = $1, updated_by = 'bench' WHERE template_name = 'agent'",
        )
        .bind(digest)
        .execute(&self.pool)
        .await
        .unwrap();
        t0
    }

    async fn pinned(&self) -> (String, Option<String>) {
        sqlx::query_as(
            "SELECT digest, updated_by FROM runtime_image_pins WHERE template_name = 'agent'",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Polls the rows until every one is online (no reason), converged,
    /// out of any rollout and on `digest`; when each got there, from `t0`.
    async fn wait_all_on(&self, digest: &str, t0: Instant) -> BTreeMap<uuid::Uuid, Duration> {
        let mut done = BTreeMap::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let rows: Vec<uuid::Uuid> = sqlx::query_scalar(
                "SELECT id FROM workspaces
                  WHERE host = $1 AND status = 'online' AND status_reason IS NULL
                    AND runtime_image_digest = $2 AND observed_generation = generation
                    AND rollout IS NULL",
            )
            .bind(self.host())
            .bind(digest)
            .fetch_all(&self.pool)
            .await
            .unwrap();
            let now = t0.elapsed();
            for id in rows {
                done.entry(id).or_insert(now);
            }
            if done.len() >= self.n {
                return done;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} rows on {digest} after {}; see {}",
                done.len(),
                self.n,
                secs(PATIENCE),
                self.logs.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// (id, start time) of each workspace's container, by name.
    async fn containers(&self, ids: &[uuid::Uuid]) -> Vec<(Option<String>, Option<String>)> {
        let mut out = Vec::new();
        for id in ids {
            let name = format!("ws-{}", &id.hyphenated().to_string()[..12]);
            let c = self
                .docker
                .inspect_container(&name, None::<InspectContainerOptions>)
                .await
                .ok();
            out.push((
                c.as_ref().and_then(|c| c.id.clone()),
                c.and_then(|c| c.state).and_then(|s| s.started_at),
            ));
        }
        out
    }

    async fn last_event(&self) -> i64 {
        sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM workspace_events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Workspaces with a replace step (stop or create) in the events after
    /// event `after`.
    async fn replaced_by_events(&self, after: i64) -> i64 {
        sqlx::query_scalar(
            "SELECT count(DISTINCT workspace_id) FROM workspace_events
              WHERE id > $1 AND action IN ('stop', 'create') AND reason LIKE 'recreate:%'",
        )
        .bind(after)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }
}

async fn pull(docker: &Docker, image: &str) {
    let opts = bollard::query_parameters::CreateImageOptionsBuilder::new()
        .from_image(image)
        .build();
    let mut stream = docker.create_image(Some(opts), None, None);
    while let Some(item) = stream.next().await {
        item.unwrap();
    }
}

/// The raw side: its own containers, shaped as berth shapes a T2
/// workspace (two volumes, loopback port, network with alias, limits,
/// restart policy, log options), replaced with the steps berth takes.
struct Raw {
    docker: Docker,
    labels: HashMap<String, String>,
    network: String,
    archive: Vec<u8>,
}

/// `configs/config.yaml` with its directory, uploaded to `/` as berth
/// writes /configs.
fn configs_archive() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    b.append_data(&mut dir, "configs/", std::io::empty())
        .unwrap();
    let body = b"name: b\n";
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o644);
    file.set_size(body.len() as u64);
    b.append_data(&mut file, "configs/config.yaml", &body[..])
        .unwrap();
    b.into_inner().unwrap()
}

impl Raw {
    /// Creates, fills and starts container `name` on its volumes; its id.
    async fn create_fill_start(&self, name: &str, image: &str) -> String {
        let opts = CreateContainerOptionsBuilder::new().name(name).build();
        let id = self
            .docker
            .create_container(
                Some(opts),
                workspace_body(name, image, &self.labels, Some(&self.network)),
            )
            .await
            .unwrap()
            .id;
        let opts = UploadToContainerOptionsBuilder::new().path("/").build();
        self.docker
            .upload_to_container(
                &id,
                Some(opts),
                bollard::body_full(self.archive.clone().into()),
            )
            .await
            .unwrap();
        self.docker.start_container(&id, None).await.unwrap();
        id
    }

    /// Volumes and a healthy container, untimed.
    async fn provision(&self, name: &str, image: &str) {
        for v in ["configs", "workspace"] {
            let req = VolumeCreateRequest {
                name: Some(format!("{name}-{v}")),
                labels: Some(self.labels.clone()),
                ..Default::default()
            };
            self.docker.create_volume(req).await.unwrap();
        }
        let since = unix_now() - 1;
        let id = self.create_fill_start(name, image).await;
        self.healthy(&id, since).await;
    }

    /// Waits for the health status `healthy`, from the engine's events
    /// (what berth waits on too), or by inspecting every 100 ms when the
    /// event stream fails.
    async fn healthy(&self, id: &str, since: i64) {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("container".to_string(), vec![id.to_string()]),
            ("event".to_string(), vec!["health_status".to_string()]),
        ]);
        let opts = EventsOptionsBuilder::new()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        let wait = async {
            if self.is_healthy(id).await {
                return;
            }
            let mut events = self.docker.events(Some(opts));
            while let Some(event) = events.next().await {
                match event {
                    Ok(e) if e.action.as_deref() == Some("health_status: healthy") => return,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            while !self.is_healthy(id).await {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(120), wait)
            .await
            .unwrap_or_else(|_| panic!("raw container {id} was not healthy within 120 s"));
    }

    async fn is_healthy(&self, id: &str) -> bool {
        let state = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.state);
        state.and_then(|s| s.health).and_then(|h| h.status) == Some(HealthStatusEnum::HEALTHY)
    }

    /// berth's replace of one workspace: stop the old container, rename it
    /// `-prev`, create the new one on the same volumes, write /configs,
    /// start, wait healthy, remove the old one. Its duration.
    async fn replace(&self, name: &str, image: &str) -> Duration {
        let t0 = Instant::now();
        let prev = format!("{name}-prev");
        let opts = StopContainerOptionsBuilder::new()
            .t(STOP_TIMEOUT_SECS)
            .build();
        self.docker.stop_container(name, Some(opts)).await.unwrap();
        let opts = RenameContainerOptionsBuilder::new().name(&prev).build();
        self.docker.rename_container(name, opts).await.unwrap();
        let since = unix_now() - 1;
        let id = self.create_fill_start(name, image).await;
        self.healthy(&id, since).await;
        let opts = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        self.docker
            .remove_container(&prev, Some(opts))
            .await
            .unwrap();
        t0.elapsed()
    }

    /// Replaces every container in `names` onto `image`, `parallel` at a
    /// time; (all done, each replace).
    async fn replace_all(
        self: &Arc<Self>,
        names: &[String],
        image: &str,
        parallel: usize,
    ) -> (Duration, Vec<Duration>) {
        let t0 = Instant::now();
        let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
        let mut tasks = tokio::task::JoinSet::new();
        for name in names {
            let (raw, name, image, sem) =
                (self.clone(), name.clone(), image.to_string(), sem.clone());
            tasks.spawn(async move {
                let _permit = sem.acquire().await.unwrap();
                raw.replace(&name, &image).await
            });
        }
        let mut each = Vec::new();
        while let Some(d) = tasks.join_next().await {
            each.push(d.unwrap());
        }
        (t0.elapsed(), each)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One max-parallel value's figures.
#[derive(Default)]
struct Row {
    berth: Duration,
    berth_first: Duration,
    raw: Duration,
    raw_each_p50: Duration,
    raw_each_p99: Duration,
}

/// The bad pin's figures at one max-parallel value.
struct Bad {
    parallel: usize,
    touched_containers: usize,
    touched_events: i64,
    halted: Option<Duration>,
    restored: Duration,
    written_back_to: String,
}

/// The raw side at one max-parallel value: `n` containers of its own made
/// healthy on v1 (untimed), replaced onto v2 `parallel` at a time (timed),
/// then removed, so its health checks and berth's never run together.
async fn raw_round(b: &Bench, parallel: usize, row: &mut Row) {
    let labels = HashMap::from([
        ("berth.test-run".to_string(), b.run.clone()),
        ("berth.bench".to_string(), b.host().to_string()),
    ]);
    let network = format!("bn-raw-{}-{parallel}", b.host());
    b.docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let raw = Arc::new(Raw {
        docker: b.docker.clone(),
        labels,
        network,
        archive: configs_archive(),
    });
    let names: Vec<String> = (0..b.n)
        .map(|_| {
            format!(
                "bench-raw-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            )
        })
        .collect();
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = tokio::task::JoinSet::new();
    for name in &names {
        let (raw, name, image, sem) = (raw.clone(), name.clone(), b.image(&b.v1), sem.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            raw.provision(&name, &image).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    println!(
        "raw: {} containers healthy on v1 after {} (4 at a time, untimed)",
        b.n,
        secs(t0.elapsed())
    );
    let (total, each) = raw.replace_all(&names, &b.image(&b.v2), parallel).await;
    println!(
        "raw: {} replaced v1 → v2, {parallel} at a time, in {}",
        b.n,
        secs(total)
    );
    row.raw = total;
    row.raw_each_p50 = percentile(&each, 0.5);
    row.raw_each_p99 = percentile(&each, 0.99);
    remove_labelled(&b.docker, &b.made.raw_filter()).await;
}

/// berth at one max-parallel value: its workspaces running and online on
/// v1 (untimed: made on the first round, woken and pinned back to v1 on
/// later ones), then the timed pin to v2, then hibernated again.
async fn berth_round(b: &Bench, parallel: usize, first: bool, row: &mut Row) {
    let phase = format!("good-{parallel}");
    b.start_berth(
        &phase,
        &[("BERTH_ROLLOUT_MAX_PARALLEL", parallel.to_string())],
    )
    .await;
    let t0 = Instant::now();
    if first {
        b.insert().await;
    } else {
        // A pin onto the digest the stopped containers do not run, then
        // the wake: the containers are replaced back onto v1 as they start.
        b.pin(&b.v1).await;
        b.set_desired("running").await;
    }
    b.wait_all_on(&b.v1, t0).await;
    println!(
        "berth: {} workspaces online on v1 after {} (untimed)",
        b.n,
        secs(t0.elapsed())
    );
    let t0 = b.pin(&b.v2).await;
    let done = b.wait_all_on(&b.v2, t0).await;
    let times: Vec<Duration> = done.values().copied().collect();
    row.berth = t0.elapsed();
    row.berth_first = times.iter().min().copied().unwrap_or_default();
    println!(
        "berth: {} on v2 at max-parallel {parallel} in {}",
        b.n,
        secs(row.berth)
    );
    b.set_desired("stopped").await;
    b.wait_all_stopped().await;
    b.stop_berth().await;
}

/// A bad pin at one max-parallel value, from the workspaces online on the
/// good pin.
async fn bad_round(b: &Bench, parallel: usize, timeout: &str, ids: &[uuid::Uuid]) -> Bad {
    let phase = format!("bad-{parallel}");
    b.start_berth(
        &phase,
        &[
            ("BERTH_ROLLOUT_MAX_PARALLEL", parallel.to_string()),
            ("BERTH_PROVISION_TIMEOUT", timeout.to_string()),
        ],
    )
    .await;
    b.set_desired("running").await;
    let (good, _) = b.pinned().await;
    b.wait_all_on(&good, Instant::now()).await;
    let before = b.containers(ids).await;
    let cursor = b.last_event().await;
    let t0 = b.pin(&b.broken).await;
    let deadline = Instant::now() + PATIENCE;
    let (halted, back) = loop {
        let (digest, by) = b.pinned().await;
        if digest != b.broken {
            let by_berth = by.as_deref() == Some("berth");
            break (by_berth.then(|| t0.elapsed()), digest);
        }
        assert!(
            Instant::now() < deadline,
            "the bad pin was not written back; see {}",
            b.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    b.wait_all_on(&back, t0).await;
    let restored = t0.elapsed();
    // Anything still on its way (a pass in flight) lands before the count.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = b.containers(ids).await;
    let touched_containers = before.iter().zip(&after).filter(|(x, y)| x != y).count();
    let bad = Bad {
        parallel,
        touched_containers,
        touched_events: b.replaced_by_events(cursor).await,
        halted,
        restored,
        written_back_to: back,
    };
    b.stop_berth().await;
    bad
}

fn short(digest: &str) -> &str {
    digest
        .strip_prefix("sha256:")
        .map_or(digest, |d| &d[..12.min(d.len())])
}

fn print_tables(b: &Bench, rows: &BTreeMap<usize, Row>, bads: &[Bad], timeout: &str) {
    println!(
        "\nPin rollout of {} workspaces v1 ({}) → v2 ({}); berth canary 1, BERTH_PIN_DEBOUNCE=0s; \
         images local on both sides",
        b.n,
        short(&b.v1),
        short(&b.v2)
    );
    println!(
        "{:>12}  {:>12}  {:>14}  {:>12}  {:>10}  {:>16}  {:>16}",
        "max-parallel",
        "berth total",
        "berth 1st done",
        "raw total",
        "berth/raw",
        "raw/replace p50",
        "raw/replace p99"
    );
    for (p, r) in rows {
        println!(
            "{:>12}  {:>12}  {:>14}  {:>12}  {:>10.2}  {:>16}  {:>16}",
            p,
            secs(r.berth),
            secs(r.berth_first),
            secs(r.raw),
            r.berth.as_secs_f64() / r.raw.as_secs_f64(),
            format!("{:.0} ms", r.raw_each_p50.as_secs_f64() * 1e3),
            format!("{:.0} ms", r.raw_each_p99.as_secs_f64() * 1e3),
        );
    }
    println!(
        "\nBad pin ({}: starts, never healthy) from a good pin; BERTH_PROVISION_TIMEOUT={timeout}",
        short(&b.broken)
    );
    println!(
        "{:>12}  {:>20}  {:>16}  {:>14}  {:>20}  {:>16}",
        "max-parallel",
        "touched (containers)",
        "touched (events)",
        "pin written back",
        "all online again",
        "written back to"
    );
    for bad in bads {
        let halted = bad
            .halted
            .map_or("not by berth".to_string(), |d| format!("after {}", secs(d)));
        let to = if bad.written_back_to == b.v2 {
            "v2".to_string()
        } else if bad.written_back_to == b.v1 {
            "v1".to_string()
        } else {
            short(&bad.written_back_to).to_string()
        };
        println!(
            "{:>12}  {:>20}  {:>16}  {:>14}  {:>20}  {:>16}",
            bad.parallel,
            bad.touched_containers,
            bad.touched_events,
            halted,
            format!("after {}", secs(bad.restored)),
            to
        );
    }
    println!("\nberth logs: {}", b.logs.display());
}

async fn bench(b: Arc<Bench>) {
    let parallel = parallelisms();
    let mut rows: BTreeMap<usize, Row> = BTreeMap::new();
    // Raw and berth back to back at each value, so that load from elsewhere
    // on the machine drifts less between the two sides of a ratio.
    for (i, &p) in parallel.iter().enumerate() {
        let row = rows.entry(p).or_default();
        raw_round(&b, p, row).await;
        berth_round(&b, p, i == 0, row).await;
    }
    let ids = b.ids().await;
    let timeout = std::env::var("BENCH_ROLLOUT_BAD_TIMEOUT").unwrap_or_else(|_| "10s".into());
    let mut bads = Vec::new();
    for &p in &parallel {
        bads.push(bad_round(&b, p, &timeout, &ids).await);
    }
    print_tables(&b, &rows, &bads, &timeout);
}

#[tokio::main]
async fn main() {
    let docker = Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let b = Arc::new(Bench::new(docker).await);
    let made = b.made.clone();
    println!(
        "host {}, {} workspaces, max-parallel {:?}",
        made.host,
        b.n,
        parallelisms()
    );
    // The bench runs as a task so that a panic or Ctrl-C still reaches the
    // cleanup below.
    let task = tokio::spawn(bench(b.clone()));
    let abort = task.abort_handle();
    let outcome = tokio::select! {
        r = task => r.err().map(|e| e.to_string()),
        _ = tokio::signal::ctrl_c() => {
            abort.abort();
            Some("interrupted".to_string())
        }
    };
    b.pool.close().await;
    made.cleanup().await;
    if let Some(why) = outcome {
        eprintln!("bench did not finish: {why}");
        std::process::exit(1);
    }
}
