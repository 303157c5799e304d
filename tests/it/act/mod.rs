//! The executor against the real engine and the run's local registry.
//!
//! Specs come from the planner's `plan::spec` over `WorkspaceRow::test`
//! fixtures, so the tests cover the path the controller takes. Each test
//! has its own scope, workspace ids and network, so tests run in parallel.

mod apply;
mod errors;
mod files;
mod image;
mod safety;
mod shape;

use std::collections::HashMap;
use std::time::Duration;

use berth::act::{ActError, EnsuredImage, Executor, ExecutorSettings, Images};
use berth::model::{ContainerSpec, WorkspaceId, WorkspaceRow};
use berth::plan::{self, Catalogue};
use bollard::models::{ContainerCreateBody, ContainerInspectResponse};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, InspectContainerOptions,
};
use futures::StreamExt;

use crate::harness::{self, DockerScope};

/// The host id the fixtures' executor and rows use.
pub const HOST: &str = "default";

pub struct Fixture {
    pub scope: DockerScope,
    pub exec: Executor,
    pub settings: plan::Settings,
    pub registry: String,
    /// The allowed workspace root, a temporary directory.
    pub root: tempfile::TempDir,
}

impl Fixture {
    pub async fn new() -> Self {
        let registry = harness::env().registry;
        let scope = DockerScope::new().await;
        let root = tempfile::tempdir().unwrap();
        let exec = Executor::new(
            scope.docker.clone(),
            ExecutorSettings {
                workspace_roots: vec![root.path().to_path_buf()],
                ..exec_settings(&scope, &registry)
            },
        );
        let mut settings = plan::Settings::test();
        settings.host_id = HOST.into();
        settings.network = format!("berth-test-net-{}", scope.test);
        settings.allow_host_root_tier = true;
        settings.workspace_roots = vec![root.path().to_path_buf()];
        Fixture {
            scope,
            exec,
            settings,
            registry,
            root,
        }
    }

    /// The settings of this fixture's executor, to vary; they allow no
    /// host directory to be bound.
    pub fn exec_settings(&self) -> ExecutorSettings {
        exec_settings(&self.scope, &self.registry)
    }

    /// `<registry>/berth-test/agent:<tag>`.
    pub fn agent(&self, tag: &str) -> String {
        format!("{}/berth-test/agent:{tag}", self.registry)
    }

    /// A valid running T2 row with a fresh id, running the v1 agent.
    pub fn row(&self) -> WorkspaceRow {
        let id = WorkspaceId(uuid::Uuid::new_v4());
        WorkspaceRow::test(id, chrono::Utc::now()).with_image(&self.agent("v1"))
    }

    /// The planner's spec for `row`, with the scope's labels added to the
    /// container and its volumes so the scope removes them.
    pub fn spec(&self, row: &WorkspaceRow) -> ContainerSpec {
        let mut spec = plan::spec(row, &Catalogue::seeded(), &self.settings).unwrap();
        for (k, v) in self.scope.labels() {
            spec.labels.insert(k.clone(), v.clone());
            for volume in &mut spec.volumes {
                volume.labels.insert(k.clone(), v.clone());
            }
        }
        spec
    }

    /// Makes `spec`'s image local, then tries the create alone (no volumes
    /// made first): what the executor answers.
    pub async fn try_create(&self, spec: &ContainerSpec) -> Result<String, ActError> {
        let image = self
            .exec
            .ensure_image(&spec.image, &spec.image_source, None)
            .await
            .unwrap();
        self.exec.create(spec, &image).await
    }

    /// Image, volumes and create, as a plan for a missing container runs
    /// them; returns the container id and the image.
    pub async fn create(&self, spec: &ContainerSpec) -> (String, EnsuredImage) {
        let image = self
            .exec
            .ensure_image(&spec.image, &spec.image_source, spec.platform.as_ref())
            .await
            .unwrap();
        for volume in &spec.volumes {
            self.exec.ensure_volume(volume).await.unwrap();
        }
        let id = self.exec.create(spec, &image).await.unwrap();
        (id, image)
    }

    pub async fn inspect(&self, id: &str) -> ContainerInspectResponse {
        self.scope
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .unwrap()
    }

    /// A container made without the executor, carrying only `labels` and
    /// the scope's, named `name`; created, not started.
    pub async fn foreign_container(&self, name: &str, labels: &[(&str, &str)]) -> String {
        let image = self
            .exec
            .ensure_image(
                &berth::model::ImageRef::parse(&self.agent("plain")).unwrap(),
                &berth::model::ImageSource::Explicit,
                None,
            )
            .await
            .unwrap();
        let mut all: HashMap<String, String> = self.scope.labels();
        for (k, v) in labels {
            all.insert(k.to_string(), v.to_string());
        }
        let body = ContainerCreateBody {
            image: Some(image.reference),
            labels: Some(all),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::new().name(name).build();
        self.scope
            .docker
            .create_container(Some(opts), body)
            .await
            .unwrap()
            .id
    }

    /// The files under `path` in container `id`: (path, mode, content).
    pub async fn download(&self, id: &str, path: &str) -> Vec<(String, u32, Vec<u8>)> {
        let opts = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let mut stream = self.scope.docker.download_from_container(id, Some(opts));
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        let mut out = Vec::new();
        for entry in tar::Archive::new(bytes.as_slice()).entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mode = entry.header().mode().unwrap();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            out.push((name, mode, content));
        }
        out
    }
}

fn exec_settings(scope: &DockerScope, registry: &str) -> ExecutorSettings {
    ExecutorSettings {
        host_id: HOST.into(),
        images: Images::Registry {
            prefix: format!("{registry}/berth-test"),
        },
        registry_auth: None,
        docker_config: None,
        pull_progress_timeout: Duration::from_secs(30),
        pull_timeout: Duration::from_secs(120),
        network_labels: scope.labels().into_iter().collect(),
        workspace_roots: Vec::new(),
    }
}

/// `"ok"` or the error's kind, for tables of outcomes.
pub fn kind<T>(result: &Result<T, ActError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    }
}

/// Runs the docker CLI (test code only); panics with its output on failure.
pub async fn docker_cli(args: &[&str]) -> String {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .expect("running the docker CLI");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "docker {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
