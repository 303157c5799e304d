//! Per-action latency of the executor next to the same raw bollard calls,
//! in the same run, on the same engine: create, files, start, stop,
//! remove. Each round runs one workspace through the executor and one
//! through raw calls, alternating, so drift in the engine hits both.
//!
//! Needs the test environment's registry:
//! `. .berth/test/env && cargo bench --bench act` (BENCH_ROUNDS, default 20).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use berth::act::{Executor, ExecutorSettings, Images, build_archive, container_body};
use berth::model::{ContainerSpec, Secret, WorkspaceId, WorkspaceRow};
use berth::plan::{self, Catalogue};
use bollard::Docker;
use bollard::models::{NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptions, StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};

const ACTIONS: [&str; 5] = ["create", "files", "start", "stop", "remove"];
const LABEL: &str = "berth.bench";

type Timings = BTreeMap<&'static str, Vec<Duration>>;

fn spec(settings: &plan::Settings, image: &str, run: &str) -> ContainerSpec {
    let id = WorkspaceId(uuid::Uuid::new_v4());
    let mut row = WorkspaceRow::test(id, chrono::Utc::now())
        .with_image(image)
        .with_config_files(serde_json::json!({
            "config.yaml": "name: bench\n",
            "scripts/setup.sh": "#!/bin/sh\r\necho ok\r\n",
        }));
    row.auth_token = Some(Secret::new("bench-token".into()));
    let mut spec = plan::spec(&row, &Catalogue::seeded(), settings).expect("a valid spec");
    spec.labels.insert(LABEL.into(), run.into());
    for v in &mut spec.volumes {
        v.labels.insert(LABEL.into(), run.into());
    }
    spec
}

async fn timed<T>(out: &mut Timings, action: &'static str, f: impl Future<Output = T>) -> T {
    let start = Instant::now();
    let value = f.await;
    out.entry(action).or_default().push(start.elapsed());
    value
}

async fn through_executor(exec: &Executor, spec: &ContainerSpec, out: &mut Timings) {
    let image = exec
        .ensure_image(&spec.image, &spec.image_source, None)
        .await
        .expect("image");
    for v in &spec.volumes {
        exec.ensure_volume(v).await.expect("volume");
    }
    let id = timed(out, "create", exec.create(spec, &image))
        .await
        .expect("create");
    timed(out, "files", exec.write_files(&id, &spec.files))
        .await
        .expect("files");
    timed(out, "start", exec.start(&id)).await.expect("start");
    timed(out, "stop", exec.stop(&id, Duration::from_secs(10)))
        .await
        .expect("stop");
    timed(out, "remove", exec.remove(&id))
        .await
        .expect("remove");
}

async fn raw(docker: &Docker, exec: &Executor, spec: &ContainerSpec, out: &mut Timings) {
    let image = exec
        .ensure_image(&spec.image, &spec.image_source, None)
        .await
        .expect("image");
    for v in &spec.volumes {
        let labels: HashMap<_, _> = v.labels.clone().into_iter().collect();
        let request = VolumeCreateRequest {
            name: Some(v.name.clone()),
            labels: Some(labels),
            ..Default::default()
        };
        docker.create_volume(request).await.expect("volume");
    }
    let body = container_body(spec, &image);
    let archive = build_archive(&spec.files).expect("archive");
    let opts = CreateContainerOptionsBuilder::new()
        .name(&spec.name)
        .build();
    let id = timed(out, "create", docker.create_container(Some(opts), body))
        .await
        .expect("create")
        .id;
    let opts = UploadToContainerOptionsBuilder::new().path("/").build();
    let body = bollard::body_full(archive.into());
    timed(
        out,
        "files",
        docker.upload_to_container(&id, Some(opts), body),
    )
    .await
    .expect("files");
    timed(out, "start", docker.start_container(&id, None))
        .await
        .expect("start");
    let opts = StopContainerOptionsBuilder::new().t(10).build();
    timed(out, "stop", docker.stop_container(&id, Some(opts)))
        .await
        .expect("stop");
    let opts = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    timed(out, "remove", docker.remove_container(&id, Some(opts)))
        .await
        .expect("remove");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

async fn cleanup(docker: &Docker, run: &str, network: &str) {
    let filters = HashMap::from([("label", vec![format!("{LABEL}={run}")])]);
    let opts = ListVolumesOptionsBuilder::new().filters(&filters).build();
    let volumes = docker.list_volumes(Some(opts)).await.ok();
    for v in volumes.and_then(|r| r.volumes).unwrap_or_default() {
        let _ = docker
            .remove_volume(&v.name, None::<RemoveVolumeOptions>)
            .await;
    }
    let _ = docker.remove_network(network).await;
}

#[tokio::main]
async fn main() {
    let Ok(registry) = std::env::var("BERTH_TEST_REGISTRY") else {
        eprintln!("BERTH_TEST_REGISTRY is not set: run under `. .berth/test/env`");
        return;
    };
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let docker = berth::docker::connect(None).await.expect("the engine");
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let network = format!("berth-bench-{run}");
    let exec_settings = ExecutorSettings {
        host_id: "default".into(),
        images: Images::Registry {
            prefix: format!("{registry}/berth-test"),
        },
        registry_auth: None,
        docker_config: None,
        pull_progress_timeout: Duration::from_secs(30),
        pull_timeout: Duration::from_secs(120),
        network_labels: BTreeMap::from([(LABEL.to_string(), run.clone())]),
        workspace_roots: Vec::new(),
    };
    let exec = Executor::new(docker.clone(), exec_settings);
    let mut settings = plan::Settings::test();
    settings.network = network.clone();
    let image = format!("{registry}/berth-test/agent:v1");
    // The network exists before the first raw create, as the executor's
    // first create makes it.
    let _ = docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            labels: Some(HashMap::from([(LABEL.to_string(), run.clone())])),
            ..Default::default()
        })
        .await;

    let mut executor: Timings = BTreeMap::new();
    let mut direct: Timings = BTreeMap::new();
    // One warm-up round each, not counted.
    through_executor(&exec, &spec(&settings, &image, &run), &mut BTreeMap::new()).await;
    raw(
        &docker,
        &exec,
        &spec(&settings, &image, &run),
        &mut BTreeMap::new(),
    )
    .await;
    for _ in 0..rounds {
        through_executor(&exec, &spec(&settings, &image, &run), &mut executor).await;
        raw(&docker, &exec, &spec(&settings, &image, &run), &mut direct).await;
    }
    cleanup(&docker, &run, &network).await;

    println!("per-action latency, {rounds} rounds, ms (executor vs raw bollard, same run)");
    println!(
        "{:<8} {:>10} {:>10} {:>7} {:>10} {:>10}",
        "action", "exec p50", "raw p50", "ratio", "exec p90", "raw p90"
    );
    for action in ACTIONS {
        let mut e = executor[action].clone();
        let mut r = direct[action].clone();
        e.sort();
        r.sort();
        let (e50, r50) = (quantile(&e, 0.5), quantile(&r, 0.5));
        println!(
            "{action:<8} {:>10.1} {:>10.1} {:>7.2} {:>10.1} {:>10.1}",
            ms(e50),
            ms(r50),
            ms(e50) / ms(r50),
            ms(quantile(&e, 0.9)),
            ms(quantile(&r, 0.9)),
        );
    }
}
