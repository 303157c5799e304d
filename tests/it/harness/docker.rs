//! The Docker Engine, and a scope that removes exactly what a test created.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};

pub const RUN_LABEL: &str = "berth.test-run";
pub const TEST_LABEL: &str = "berth.test";

/// Connects to the local engine and negotiates the API version (the engine
/// here is Debian's 20.10, API 1.41).
pub async fn docker() -> Docker {
    Docker::connect_with_local_defaults()
        .expect("connecting to the Docker Engine")
        .negotiate_version()
        .await
        .expect("negotiating the Docker API version")
}

/// Pulls `image` from the run's registry, failing the test on any error
/// (one inside the 200 stream included).
pub async fn pull(docker: &Docker, image: &str) {
    use futures::StreamExt;
    let opts = bollard::query_parameters::CreateImageOptionsBuilder::new()
        .from_image(image)
        .build();
    let mut stream = docker.create_image(Some(opts), None, None);
    while let Some(item) = stream.next().await {
        item.unwrap();
    }
}

/// What a test creates on the daemon carries the run's label and this
/// scope's own label; dropping the scope removes objects carrying both, and
/// nothing else.
#[derive(Debug)]
pub struct DockerScope {
    pub docker: Docker,
    pub run: String,
    pub test: String,
    /// berth host ids this test runs berth as: what berth creates for them
    /// (labelled `berth.host=<id>`) goes too.
    pub hosts: Vec<String>,
    /// Objects the test made without the scope's labels (a legacy Go
    /// object must carry no `berth.*` label), removed by name.
    pub named_containers: Vec<String>,
    pub named_volumes: Vec<String>,
}

/// What a cleanup removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
    pub networks: Vec<String>,
}

impl DockerScope {
    pub async fn new() -> Self {
        DockerScope {
            docker: docker().await,
            run: super::env().run_id,
            test: super::unique(),
            hosts: Vec::new(),
            named_containers: Vec::new(),
            named_volumes: Vec::new(),
        }
    }

    /// A berth host id for this test, unique and carrying the run's id (so
    /// `scripts/testenv down` finds what berth made for it); its objects
    /// are removed with the scope.
    pub fn host(&mut self) -> String {
        let host = format!("t{}-{}", self.run, &super::unique()[..8]);
        self.hosts.push(host.clone());
        host
    }

    /// Creates container `name` from `body` and starts it; its id.
    pub async fn run(&self, name: &str, body: bollard::models::ContainerCreateBody) -> String {
        let opts = bollard::query_parameters::CreateContainerOptionsBuilder::new()
            .name(name)
            .build();
        let id = self
            .docker
            .create_container(Some(opts), body)
            .await
            .unwrap()
            .id;
        self.docker.start_container(&id, None).await.unwrap();
        id
    }

    /// The labels every object of this scope carries.
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (RUN_LABEL.to_string(), self.run.clone()),
            (TEST_LABEL.to_string(), self.test.clone()),
        ])
    }

    fn filters(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![
                format!("{RUN_LABEL}={}", self.run),
                format!("{TEST_LABEL}={}", self.test),
            ],
        )])
    }

    fn all_filters(&self) -> Vec<HashMap<String, Vec<String>>> {
        let mut all = vec![self.filters()];
        for host in &self.hosts {
            all.push(HashMap::from([(
                "label".to_string(),
                vec![format!("berth.host={host}")],
            )]));
        }
        all
    }

    /// Removes this scope's containers, volumes and networks.
    pub async fn cleanup(&self) -> Removed {
        let mut removed = Removed::default();
        for filters in self.all_filters() {
            let r = cleanup(&self.docker, &filters).await;
            removed.containers.extend(r.containers);
            removed.volumes.extend(r.volumes);
            removed.networks.extend(r.networks);
        }
        removed
    }
}

async fn cleanup(docker: &Docker, filters: &HashMap<String, Vec<String>>) -> Removed {
    let mut removed = Removed::default();
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(filters)
        .build();
    for c in docker.list_containers(Some(opts)).await.unwrap_or_default() {
        let Some(id) = c.id else { continue };
        let force = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(false)
            .build();
        if docker.remove_container(&id, Some(force)).await.is_ok() {
            removed.containers.push(id);
        }
    }
    let opts = ListVolumesOptionsBuilder::new().filters(filters).build();
    let volumes = docker
        .list_volumes(Some(opts))
        .await
        .ok()
        .and_then(|r| r.volumes);
    for v in volumes.unwrap_or_default() {
        let force = RemoveVolumeOptionsBuilder::new().force(true).build();
        if docker.remove_volume(&v.name, Some(force)).await.is_ok() {
            removed.volumes.push(v.name);
        }
    }
    let opts = ListNetworksOptionsBuilder::new().filters(filters).build();
    for n in docker.list_networks(Some(opts)).await.unwrap_or_default() {
        let Some(id) = n.id else { continue };
        if docker.remove_network(&id).await.is_ok() {
            removed.networks.push(id);
        }
    }
    removed
}

impl Drop for DockerScope {
    fn drop(&mut self) {
        // Drop may run inside a test's runtime, which cannot be blocked on:
        // clean up from a thread with a runtime of its own.
        let all = self.all_filters();
        let (containers, volumes) = (self.named_containers.clone(), self.named_volumes.clone());
        let result = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleanup");
            rt.block_on(async {
                let docker = docker().await;
                for filters in &all {
                    cleanup(&docker, filters).await;
                }
                for name in &containers {
                    let force = RemoveContainerOptionsBuilder::new().force(true).build();
                    let _ = docker.remove_container(name, Some(force)).await;
                }
                for name in &volumes {
                    let force = RemoveVolumeOptionsBuilder::new().force(true).build();
                    let _ = docker.remove_volume(name, Some(force)).await;
                }
            })
        })
        .join();
        if result.is_err() {
            eprintln!("cleanup of test scope {} failed", self.test);
        }
    }
}
