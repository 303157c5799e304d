//! What the end-to-end benchmarks share: their settings from the test
//! environment, a percentile, the raw side's workspace-shaped container,
//! and removing what they labelled.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, HostConfigLogConfig, NetworkingConfig,
    PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
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

/// The raw side's container with a workspace's shape (env, volumes
/// `<name>-configs` and `<name>-workspace`, the T2 limits, a loopback port,
/// restart policy, log options, and the network with `name` as alias when
/// one is given).
pub fn workspace_body(
    name: &str,
    image: &str,
    labels: &HashMap<String, String>,
    network: Option<&str>,
) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.to_string()),
        labels: Some(labels.clone()),
        env: Some(vec![
            format!("WORKSPACE_ID={name}"),
            "WORKSPACE_CONFIG_PATH=/configs".into(),
            "TIER=2".into(),
            "PLUGINS_DIR=/plugins".into(),
            "PYTHONPATH=/app".into(),
        ]),
        exposed_ports: Some(vec!["8000/tcp".into()]),
        host_config: Some(HostConfig {
            binds: Some(vec![
                format!("{name}-configs:/configs"),
                format!("{name}-workspace:/workspace"),
            ]),
            memory: Some(512 << 20),
            nano_cpus: Some(1_000_000_000),
            network_mode: network.map(str::to_string),
            port_bindings: Some(HashMap::from([(
                "8000/tcp".to_string(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                }]),
            )])),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "10m".to_string()),
                    ("max-file".to_string(), "3".to_string()),
                ])),
            }),
            ..Default::default()
        }),
        networking_config: network.map(|network| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.to_string(),
                EndpointSettings {
                    aliases: Some(vec![name.to_string()]),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}

/// Stops a `berth run` with SIGTERM (it drains and releases the lease, so
/// the next one takes the host at once); SIGKILL after 40 s.
pub async fn stop_berth(mut child: tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
