//! What the end-to-end benchmarks share: their settings from the test
//! environment, a percentile, and removing what they labelled.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};

/// A variable the test environment's env file sets.
pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: source a testenv env file"))
}

/// A size from the environment, or `default`.
pub fn count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (nearest rank) of `v`, in any order; `v` not empty.
pub fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Removes the containers, volumes and networks carrying `label`
/// (`key=value`), and nothing else.
pub async fn remove_labelled(docker: &Docker, label: &str) {
    let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    for c in docker.list_containers(Some(opts)).await.unwrap_or_default() {
        let force = RemoveContainerOptionsBuilder::new().force(true).build();
        let _ = docker
            .remove_container(&c.id.unwrap_or_default(), Some(force))
            .await;
    }
    let opts = ListVolumesOptionsBuilder::new().filters(&filters).build();
    let volumes = docker
        .list_volumes(Some(opts))
        .await
        .ok()
        .and_then(|v| v.volumes);
    for v in volumes.unwrap_or_default() {
        let force = RemoveVolumeOptionsBuilder::new().force(true).build();
        let _ = docker.remove_volume(&v.name, Some(force)).await;
    }
    let opts = ListNetworksOptionsBuilder::new().filters(&filters).build();
    for n in docker.list_networks(Some(opts)).await.unwrap_or_default() {
        let _ = docker.remove_network(&n.id.unwrap_or_default()).await;
    }
}
