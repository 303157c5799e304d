//! Row committed → container running and row online, through `berth run`,
//! next to the raw Docker API doing the same create + start work in the
//! same run. It prints figures; it asserts nothing.
//!
//! Needs a running test environment:
//!   scripts/testenv up .berth/test && . .berth/test/env
//!   cargo bench --bench converge
//! BENCH_ONE_AT_A_TIME (default 50) and BENCH_BATCH (default 100) size it.
//!
//! Both sides run the test image without a health check (`agent:plain`):
//! the one with a 1 s check, a hundred times over, saturates a two-core
//! machine with health-check execs and measures that instead. berth then
//! counts a workspace ready after `BERTH_READY_MIN_UPTIME=1s` of running.
//! Each phase starts on an empty host. The batch phase also brings the
//! same containers up with Debian's docker-compose (v1), and prints berth's
//! resident memory idle and with the batch next to compose's peak.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{CreateContainerOptionsBuilder, InspectContainerOptions};
use sqlx::{Connection, Executor, PgPool};

mod common;
use common::{count, percentile, remove_labelled, stop_berth, var, workspace_body};

fn summary(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let (p50, p99) = (percentile(&v, 0.5), percentile(&v, 0.99));
    println!(
        "{name:<40} n={:<4} p50 {:>8.1} ms  p99 {:>8.1} ms",
        v.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    (p50, p99)
}

async fn running(docker: &Docker, name: &str) -> bool {
    docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .ok()
        .and_then(|c| c.state)
        .and_then(|s| s.running)
        == Some(true)
}

struct Setup {
    pool: PgPool,
    url: String,
    host: String,
    image: String,
}

async fn setup(docker: &Docker) -> Setup {
    let admin = var("BERTH_TEST_PG_URL");
    let registry = var("BERTH_TEST_REGISTRY");
    let run = var("BERTH_TEST_RUN_ID");
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let name = format!("bench_{suffix}");
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let pool = PgPool::connect(&url).await.unwrap();
    berth::desired::migrate(&pool).await.unwrap();
    let reference = format!("{registry}/berth-test/agent:plain");
    let digest = docker
        .inspect_registry_image(&reference, None)
        .await
        .unwrap()
        .descriptor
        .digest
        .unwrap();
    sqlx::query("INSERT INTO runtimes (name, image_repository) VALUES ('agent', 'agent')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO runtime_image_pins (template_name, digest) VALUES ('agent', $1)")
        .bind(&digest)
        .execute(&pool)
        .await
        .unwrap();
    Setup {
        pool,
        url,
        host: format!("t{run}-bench-{suffix}"),
        image: format!("{registry}/berth-test/agent@{digest}"),
    }
}

async fn insert(pool: &PgPool, host: &str, n: usize) -> Vec<uuid::Uuid> {
    let mut tx = pool.begin().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let id: uuid::Uuid = sqlx::query_scalar(
            "INSERT INTO workspaces (name, runtime, host, config_files)
             VALUES ('b', 'agent', $1, '{\"config.yaml\": \"name: b\\n\"}') RETURNING id",
        )
        .bind(host)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        ids.push(id);
    }
    tx.commit().await.unwrap();
    ids
}

fn container_name(id: &uuid::Uuid) -> String {
    format!("ws-{}", &id.hyphenated().to_string()[..12])
}

/// Waits until every id is running (first time) and online (second).
async fn converge(
    docker: &Docker,
    pool: &PgPool,
    ids: &[uuid::Uuid],
    t0: Instant,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut ran: HashMap<uuid::Uuid, Duration> = HashMap::new();
    let mut online: HashMap<uuid::Uuid, Duration> = HashMap::new();
    let deadline = t0 + Duration::from_secs(600);
    while online.len() < ids.len() && Instant::now() < deadline {
        for id in ids {
            if !ran.contains_key(id) && running(docker, &container_name(id)).await {
                ran.insert(*id, t0.elapsed());
            }
        }
        let rows: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT id FROM workspaces WHERE id = ANY($1) AND status = 'online'",
        )
        .bind(ids)
        .fetch_all(pool)
        .await
        .unwrap();
        for id in rows {
            online.entry(id).or_insert_with(|| t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (ran.into_values().collect(), online.into_values().collect())
}

/// The raw API: two volumes, a container with the workspace's shape, start.
async fn raw_one(docker: &Docker, image: &str, label: &HashMap<String, String>) -> Duration {
    let name = format!(
        "bench-raw-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let t0 = Instant::now();
    for v in ["configs", "workspace"] {
        let req = VolumeCreateRequest {
            name: Some(format!("{name}-{v}")),
            labels: Some(label.clone()),
            ..Default::default()
        };
        docker.create_volume(req).await.unwrap();
    }
    let body = workspace_body(&name, image, label, None);
    let opts = CreateContainerOptionsBuilder::new().name(&name).build();
    let id = docker.create_container(Some(opts), body).await.unwrap().id;
    docker.start_container(&id, None).await.unwrap();
    t0.elapsed()
}

/// `VmRSS` and `VmHWM` (peak) of process `pid`, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Debian's docker-compose (v1) bringing up `n` workspace-shaped services
/// (the raw side's shape) in one project: its wall time and peak RSS in
/// MiB, from GNU time. `None` when either tool is missing. Its parallelism
/// is left wide (`COMPOSE_PARALLEL_LIMIT` at twice the services): compose
/// v1 nests a per-container task inside each per-service task under one
/// limit, so a limit below the number of services deadlocks it
/// (docker/compose#5864; seen here with 8 of 40).
fn compose_up(
    n: usize,
    image: &str,
    label: (&str, &str),
    project: &str,
) -> Option<(Duration, f64)> {
    let found = |tool: &str| std::path::Path::new(tool).exists();
    if !found("/usr/bin/docker-compose") || !found("/usr/bin/time") {
        println!("docker-compose or GNU time is not installed: the compose baseline is left out");
        return None;
    }
    let (key, value) = label;
    let labels = format!("{{{key}: '{value}'}}");
    let mut yaml = String::from("version: '2.4'\nservices:\n");
    let mut volumes = String::from("volumes:\n");
    for i in 0..n {
        let name = format!("w{i}");
        yaml += &format!(
            "  {name}:\n    image: {image}\n    labels: {labels}\n    environment: [WORKSPACE_ID={name}, WORKSPACE_CONFIG_PATH=/configs, TIER=2, PLUGINS_DIR=/plugins, PYTHONPATH=/app]\n    volumes: ['{name}-configs:/configs', '{name}-workspace:/workspace']\n    ports: ['127.0.0.1::8000']\n    mem_limit: 512m\n    cpus: 1\n    restart: unless-stopped\n    logging: {{driver: json-file, options: {{max-size: 10m, max-file: '3'}}}}\n"
        );
        volumes += &format!(
            "  {name}-configs: {{labels: {labels}}}\n  {name}-workspace: {{labels: {labels}}}\n"
        );
    }
    yaml += &volumes;
    yaml += &format!("networks:\n  default:\n    labels: {labels}\n");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("docker-compose.yml");
    std::fs::write(&file, yaml).unwrap();
    let t0 = Instant::now();
    // A compose that stalls all the same is cut off after five minutes.
    let out = std::process::Command::new("/usr/bin/time")
        .args([
            "-f",
            "maxrss_kb %M",
            "timeout",
            "300",
            "docker-compose",
            "-p",
            project,
            "-f",
        ])
        .arg(&file)
        .args(["up", "-d", "--no-color"])
        .env("COMPOSE_PARALLEL_LIMIT", (2 * n).to_string())
        .output()
        .unwrap();
    let took = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rss = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("maxrss_kb "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    match (out.status.success(), rss) {
        (true, Some(kb)) => Some((took, kb / 1024.0)),
        _ => {
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            let why = if out.status.code() == Some(124) {
                "did not finish within 300 s"
            } else {
                "failed"
            };
            println!("docker-compose up {why}: {tail:?}");
            None
        }
    }
}

/// `berth run` for the bench's host, given two seconds to take its lease.
async fn start_berth(s: &Setup) -> tokio::process::Child {
    let berth = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("run")
        .env("DATABASE_URL", &s.url)
        .env("BERTH_HOST_ID", &s.host)
        .env(
            "MOLECULE_IMAGE_REGISTRY",
            format!("{}/berth-test", var("BERTH_TEST_REGISTRY")),
        )
        .env("BERTH_NETWORK", format!("bn-{}", s.host))
        .env("BERTH_LISTEN", "127.0.0.1:0")
        .env("BERTH_READY_MIN_UPTIME", "1s")
        .env("BERTH_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    berth
}

#[tokio::main]
async fn main() {
    let (one, batch) = (count("BENCH_ONE_AT_A_TIME", 50), count("BENCH_BATCH", 100));
    let docker = Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let s = setup(&docker).await;
    let host_label = format!("berth.host={}", s.host);
    let raw_label = HashMap::from([
        ("berth.test-run".to_string(), var("BERTH_TEST_RUN_ID")),
        ("berth.bench".to_string(), s.host.clone()),
    ]);
    let raw_filter = format!("berth.bench={}", s.host);

    let berth = start_berth(&s).await;

    println!("one at a time ({one} rows; the image is local, concurrency 8):");
    let (mut ran, mut online, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..one {
        let t0 = Instant::now();
        let ids = insert(&s.pool, &s.host, 1).await;
        let (r, o) = converge(&docker, &s.pool, &ids, t0).await;
        ran.extend(r);
        online.extend(o);
        raw.push(raw_one(&docker, &s.image, &raw_label).await);
    }
    let (berth_run, _) = summary("berth: row committed → container running", ran);
    summary("berth: row committed → row online", online);
    let (raw_p50, _) = summary("raw API: volumes + create + start", raw);
    println!(
        "ratio berth running / raw p50: {:.2}",
        berth_run.as_secs_f64() / raw_p50.as_secs_f64()
    );

    // The batch starts on an empty host: no rows, no containers, and a
    // released lease (a killed berth's would hold the host for its TTL).
    stop_berth(berth).await;
    remove_labelled(&docker, &host_label).await;
    remove_labelled(&docker, &raw_filter).await;
    sqlx::query("DELETE FROM workspaces")
        .execute(&s.pool)
        .await
        .unwrap();
    let mut berth = start_berth(&s).await;
    let pid = berth.id().unwrap_or_default();
    let (idle_rss, _) = rss_mib(pid);

    println!("\n{batch} rows in one transaction:");
    let t0 = Instant::now();
    let ids = insert(&s.pool, &s.host, batch).await;
    let (r, o) = converge(&docker, &s.pool, &ids, t0).await;
    let (berth_rss, berth_peak) = rss_mib(pid);
    let all_running = r.iter().max().copied().unwrap_or_default();
    let all_online = o.iter().max().copied().unwrap_or_default();
    println!(
        "berth: all {} running after {:.1} s, all online after {:.1} s",
        r.len(),
        all_running.as_secs_f64(),
        all_online.as_secs_f64()
    );
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    for _ in 0..batch {
        let (docker, image, label, sem) = (
            docker.clone(),
            s.image.clone(),
            raw_label.clone(),
            sem.clone(),
        );
        tasks.spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            raw_one(&docker, &image, &label).await
        });
    }
    while tasks.join_next().await.is_some() {}
    let raw_batch = t0.elapsed();
    println!(
        "raw API, 8 at a time: all {batch} running after {:.1} s",
        raw_batch.as_secs_f64()
    );
    println!(
        "ratio berth all running / raw: {:.2}",
        all_running.as_secs_f64() / raw_batch.as_secs_f64()
    );
    // The compose project starts where the raw batch did: beside berth's
    // containers only.
    remove_labelled(&docker, &raw_filter).await;
    let project = format!(
        "bench{}",
        s.host.replace(|c: char| !c.is_ascii_alphanumeric(), "")
    );
    let compose = compose_up(batch, &s.image, ("berth.bench", &s.host), &project);
    if let Some((took, _)) = compose {
        println!(
            "docker-compose up -d, unbounded: all {batch} running after {:.1} s",
            took.as_secs_f64()
        );
        println!(
            "ratio berth all running / docker-compose: {:.2}",
            all_running.as_secs_f64() / took.as_secs_f64()
        );
    }
    println!(
        "\nmemory: berth RSS {idle_rss:.1} MiB idle, {berth_rss:.1} MiB with {batch} workspaces (peak {berth_peak:.1} MiB)"
    );
    if let Some((_, compose_peak)) = compose {
        println!(
            "docker-compose peak RSS {compose_peak:.1} MiB for the same {batch}; ratio berth peak / compose peak: {:.2}",
            berth_peak / compose_peak
        );
    }

    let _ = berth.kill().await;
    remove_labelled(&docker, &host_label).await;
    remove_labelled(&docker, &raw_filter).await;
}
