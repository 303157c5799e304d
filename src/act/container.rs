//! Container actions: create from the spec, start, stop, restart, rename,
//! force-remove, and the URL from the published port. Each one inspects
//! the container first and acts only on one of this host's.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HostConfig,
    HostConfigLogConfig, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, RemoveContainerOptionsBuilder,
    RenameContainerOptionsBuilder, RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};

use crate::docker::DockerError;
use crate::model::{ContainerSpec, LABEL_IMAGE_DIGEST, LABEL_IMAGE_ID, LABEL_SPEC_HASH};

use super::binds::check_binds;
use super::{ActError, EnsuredImage, Executor, Object, docker_labels};

/// Beyond the stop timeout, how long the stop request may take to answer.
const STOP_SLACK: Duration = Duration::from_secs(30);

/// The create body for `spec`, from `image`. Pure, so the shape is
/// checked without an engine; the integration tests check what the
/// engine made of it.
pub fn container_body(spec: &ContainerSpec, image: &EnsuredImage) -> ContainerCreateBody {
    let m = &spec.material;
    let mut labels = docker_labels(&spec.labels);
    labels.insert(LABEL_IMAGE_ID.into(), image.id.clone());
    match &image.digest {
        Some(d) => labels.insert(LABEL_IMAGE_DIGEST.into(), d.to_string()),
        None => labels.remove(LABEL_IMAGE_DIGEST),
    };
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for port in &m.ports {
        // `host_ip:host_port:container_port/proto`; an empty host port is
        // an ephemeral one.
        let mut parts = port.rsplitn(3, ':');
        let container = parts.next().unwrap_or_default().to_string();
        let host_port = parts.next().unwrap_or_default().to_string();
        let host_ip = parts.next().unwrap_or_default().to_string();
        port_bindings
            .entry(container)
            .or_default()
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(host_ip),
                host_port: Some(host_port),
            });
    }
    let positive = |v: i64| (v > 0).then_some(v);
    let host_config = HostConfig {
        binds: Some(m.binds.clone()),
        tmpfs: (!m.tmpfs.is_empty()).then(|| m.tmpfs.clone().into_iter().collect()),
        readonly_rootfs: Some(m.readonly_rootfs),
        memory: positive(m.memory),
        nano_cpus: positive(m.nano_cpus),
        privileged: Some(m.privileged),
        pid_mode: (!m.pid_mode.is_empty()).then(|| m.pid_mode.clone()),
        network_mode: (!m.network_mode.is_empty()).then(|| m.network_mode.clone()),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        restart_policy: Some(RestartPolicy {
            name: Some(match spec.restart_policy.as_str() {
                "always" => RestartPolicyNameEnum::ALWAYS,
                "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
                "no" => RestartPolicyNameEnum::NO,
                _ => RestartPolicyNameEnum::UNLESS_STOPPED,
            }),
            maximum_retry_count: None,
        }),
        log_config: Some(HostConfigLogConfig {
            typ: Some(spec.log_driver.clone()),
            config: Some(docker_labels(&spec.log_opts)),
        }),
        ..Default::default()
    };
    let joins_network = !m.network_mode.is_empty() && m.network_mode != "host";
    let networking_config =
        (joins_network && !m.network_aliases.is_empty()).then(|| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                m.network_mode.clone(),
                EndpointSettings {
                    aliases: Some(m.network_aliases.clone()),
                    ..Default::default()
                },
            )])),
        });
    ContainerCreateBody {
        image: Some(image.reference.clone()),
        env: Some(m.env.iter().map(|e| e.to_docker()).collect()),
        labels: Some(labels),
        exposed_ports: (!spec.exposed_ports.is_empty()).then(|| spec.exposed_ports.clone()),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    }
}

/// An error of an action addressed at container `id`: 404 means it is
/// gone; anything else keeps its class.
pub(super) fn container_error(action: &'static str, id: &str, e: DockerError) -> ActError {
    match e {
        DockerError::NotFound { .. } => ActError::Gone {
            object: Object::Container,
            name: id.to_string(),
        },
        other => ActError::docker(action, other),
    }
}

/// A start or restart error: the daemon's refusal (any answer with a
/// status) is `start_failed` with its words; no answer is transient.
fn start_error(action: &'static str, id: &str, e: DockerError) -> ActError {
    match e {
        DockerError::NotFound { .. } => container_error(action, id, e),
        DockerError::Transport { .. } | DockerError::Other { .. } => ActError::docker(action, e),
        DockerError::Conflict { message }
        | DockerError::Refused { message, .. }
        | DockerError::Server { message, .. }
        | DockerError::Auth { message }
        | DockerError::RateLimited { message }
        | DockerError::Stream { message } => ActError::StartFailed {
            container: id.to_string(),
            message,
        },
    }
}

impl Executor {
    pub(super) async fn inspect(&self, id: &str) -> Result<ContainerInspectResponse, DockerError> {
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(DockerError::from)
    }

    /// The container holding `name` after a 409; gone meanwhile is
    /// `InTheWay` (the name was held a moment ago: plan again).
    async fn name_holder(&self, name: &str) -> Result<ContainerInspectResponse, ActError> {
        self.inspect(name).await.map_err(|e| match e {
            DockerError::NotFound { .. } => ActError::InTheWay {
                object: Object::Container,
                name: name.to_string(),
                detail: "the name was taken and freed meanwhile".into(),
            },
            other => ActError::docker("inspect container", other),
        })
    }

    /// The host's CPUs as NanoCPUs, asked of the engine once.
    async fn host_nano_cpus(&self) -> Result<i64, ActError> {
        self.host_cpus
            .get_or_try_init(|| async {
                let info = self
                    .docker
                    .info()
                    .await
                    .map_err(|e| ActError::docker("engine info", e))?;
                Ok(info.ncpu.unwrap_or(1).max(1) * 1_000_000_000)
            })
            .await
            .copied()
    }

    /// Inspects container `id` and checks that it is this host's.
    pub(super) async fn owned_container(
        &self,
        id: &str,
    ) -> Result<ContainerInspectResponse, ActError> {
        let info = self
            .inspect(id)
            .await
            .map_err(|e| container_error("inspect container", id, e))?;
        let labels = info.config.as_ref().and_then(|c| c.labels.as_ref());
        match self.not_owned(labels, None) {
            Some(detail) => Err(ActError::NameConflict {
                object: Object::Container,
                name: info
                    .name
                    .as_deref()
                    .unwrap_or(id)
                    .trim_start_matches('/')
                    .into(),
                detail,
            }),
            None => Ok(info),
        }
    }

    /// What a create needs of the host, checked before a replace stops the
    /// old container: every host directory bound resolves under the
    /// workspace roots, and the network exists.
    pub async fn preflight(
        &self,
        binds: &[String],
        others: &[crate::model::OtherDir],
        network: &str,
    ) -> Result<(), ActError> {
        check_binds(binds, &self.settings.workspace_roots, others).await?;
        if !network.is_empty() && network != "host" {
            self.ensure_network(network).await?;
        }
        Ok(())
    }

    /// Creates the container from `spec` and `image`; returns its id. A
    /// host directory the spec binds must resolve under the workspace roots
    /// (see [`super::binds`]), or nothing is created. The workspace network
    /// is created first when missing. When the name is
    /// taken: by an object that is not this workspace's on this host, a
    /// `name_conflict` (never a removal); by this workspace's container of
    /// the same spec and image, that container (a retried create); by
    /// another of its containers, `InTheWay`.
    pub async fn create(
        &self,
        spec: &ContainerSpec,
        image: &EnsuredImage,
    ) -> Result<String, ActError> {
        check_binds(
            &spec.material.binds,
            &self.settings.workspace_roots,
            &spec.other_dirs,
        )
        .await?;
        let network = &spec.material.network_mode;
        if !network.is_empty() && network != "host" {
            self.ensure_network(network).await?;
        }
        let mut opts = CreateContainerOptionsBuilder::new().name(&spec.name);
        if let Some(p) = &spec.platform {
            opts = opts.platform(&p.0);
        }
        let mut body = container_body(spec, image);
        // The engine refuses NanoCPUs above the host's CPU count; a tier's
        // CPUs are a cap, so on a smaller host the cap is the whole host.
        if let Some(host) = body.host_config.as_mut()
            && let Some(nano) = host.nano_cpus
        {
            host.nano_cpus = Some(nano.min(self.host_nano_cpus().await?));
        }
        super::may_change("create container")?;
        let err = match self.docker.create_container(Some(opts.build()), body).await {
            Ok(created) => return Ok(created.id),
            Err(e) => DockerError::from(e),
        };
        if !err.is_conflict() {
            return Err(ActError::docker("create container", err));
        }
        let info = self.name_holder(&spec.name).await?;
        let labels = info.config.as_ref().and_then(|c| c.labels.clone());
        if let Some(detail) = self.not_owned(labels.as_ref(), Some(spec.workspace)) {
            return Err(ActError::NameConflict {
                object: Object::Container,
                name: spec.name.clone(),
                detail,
            });
        }
        let labels = labels.unwrap_or_default();
        let same = labels.get(LABEL_SPEC_HASH) == Some(&spec.hash)
            && labels.get(LABEL_IMAGE_ID) == Some(&image.id);
        match info.id {
            Some(id) if same => Ok(id),
            _ => Err(ActError::InTheWay {
                object: Object::Container,
                name: spec.name.clone(),
                detail: "a container of this workspace with another spec holds the name".into(),
            }),
        }
    }

    /// Starts the container; already running is done.
    pub async fn start(&self, id: &str) -> Result<(), ActError> {
        self.owned_container(id).await?;
        super::may_change("start container")?;
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| start_error("start container", id, e.into()))
    }

    /// Stops the container: SIGTERM, then SIGKILL after `timeout`; already
    /// stopped is done.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<(), ActError> {
        self.owned_container(id).await?;
        let t = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptionsBuilder::new().t(t).build();
        // The request timeout covers the wait for the answer, which comes
        // only once the container is down.
        let docker = self.docker.clone().with_timeout(timeout + STOP_SLACK);
        super::may_change("stop container")?;
        docker
            .stop_container(id, Some(opts))
            .await
            .map_err(|e| container_error("stop container", id, e.into()))
    }

    /// Restarts the container (stop with `timeout`, then start).
    pub async fn restart(&self, id: &str, timeout: Duration) -> Result<(), ActError> {
        self.owned_container(id).await?;
        let t = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        let opts = RestartContainerOptionsBuilder::new().t(t).build();
        let docker = self.docker.clone().with_timeout(timeout + STOP_SLACK);
        super::may_change("restart container")?;
        docker
            .restart_container(id, Some(opts))
            .await
            .map_err(|e| start_error("restart container", id, e.into()))
    }

    /// Attaches the container to `network` (made again if it is gone) with
    /// `aliases`; already attached is done.
    pub async fn connect(
        &self,
        id: &str,
        network: &str,
        aliases: &[String],
    ) -> Result<(), ActError> {
        let info = self.owned_container(id).await?;
        let attached = info
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .is_some_and(|n| n.contains_key(network));
        if attached {
            return Ok(());
        }
        self.ensure_network(network).await?;
        let request = bollard::models::NetworkConnectRequest {
            container: id.to_string(),
            endpoint_config: Some(bollard::models::EndpointSettings {
                aliases: Some(aliases.to_vec()),
                ..Default::default()
            }),
        };
        super::may_change("connect container")?;
        self.docker
            .connect_network(network, request)
            .await
            .map_err(|e| container_error("connect container", id, e.into()))
    }

    /// Renames the container to `to`; having that name already is done.
    /// A name held by another object is a `name_conflict` when that object
    /// is not this host's, else `InTheWay`.
    pub async fn rename(&self, id: &str, to: &str) -> Result<(), ActError> {
        let info = self.owned_container(id).await?;
        if info.name.as_deref().map(|n| n.trim_start_matches('/')) == Some(to) {
            return Ok(());
        }
        let opts = RenameContainerOptionsBuilder::new().name(to).build();
        super::may_change("rename container")?;
        let err = match self.docker.rename_container(id, opts).await {
            Ok(()) => return Ok(()),
            Err(e) => DockerError::from(e),
        };
        if !err.is_conflict() {
            return Err(container_error("rename container", id, err));
        }
        let holder = self.name_holder(to).await?;
        let labels = holder.config.as_ref().and_then(|c| c.labels.as_ref());
        Err(match self.not_owned(labels, None) {
            Some(detail) => ActError::NameConflict {
                object: Object::Container,
                name: to.to_string(),
                detail,
            },
            None => ActError::InTheWay {
                object: Object::Container,
                name: to.to_string(),
                detail: "another container of this host holds the name".into(),
            },
        })
    }

    /// Kills and removes the container with its anonymous volumes (named
    /// volumes stay); gone already is done.
    pub async fn remove(&self, id: &str) -> Result<(), ActError> {
        match self.owned_container(id).await {
            Ok(_) => {}
            Err(ActError::Gone { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        let opts = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        super::may_change("remove container")?;
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) => match DockerError::from(e) {
                DockerError::NotFound { .. } => Ok(()),
                other => Err(ActError::docker("remove container", other)),
            },
        }
    }

    /// The workspace URL: the spec's fixed URL when it has one (T4, host
    /// network), else `http://127.0.0.1:<port>` from the loopback port
    /// published for the spec's exposed port; `None` while none is
    /// published (the container is not running).
    pub async fn url(&self, id: &str, spec: &ContainerSpec) -> Result<Option<String>, ActError> {
        if let Some(url) = &spec.fixed_url {
            return Ok(Some(url.clone()));
        }
        let Some(exposed) = spec.exposed_ports.first() else {
            return Ok(None);
        };
        let info = self
            .inspect(id)
            .await
            .map_err(|e| container_error("inspect container", id, e))?;
        let port = info
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|mut ports| ports.remove(exposed))
            .flatten()
            .and_then(|bindings| {
                bindings
                    .into_iter()
                    .find(|b| b.host_ip.as_deref() == Some("127.0.0.1"))
            })
            .and_then(|b| b.host_port)
            .filter(|p| !p.is_empty());
        Ok(port.map(|p| format!("http://127.0.0.1:{p}")))
    }
}

#[cfg(test)]
mod tests;
