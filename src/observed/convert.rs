//! Docker's answers → the model's observed types.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryStateEnum, HealthStatusEnum, Volume,
};
use chrono::{DateTime, Utc};

use crate::model::{ContainerState, EnvVar, Health, Material, ObservedContainer, ObservedVolume};

/// Docker's timestamps; its zero time (`0001-01-01…`) is "never".
fn time(text: Option<&str>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(text?)
        .ok()?
        .with_timezone(&Utc);
    (t.timestamp() > 0).then_some(t)
}

fn labels(map: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    map.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn state_of(status: Option<ContainerStateStatusEnum>) -> ContainerState {
    match status {
        Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerStateStatusEnum::EXITED) | Some(ContainerStateStatusEnum::STOPPING) => {
            ContainerState::Exited
        }
        Some(ContainerStateStatusEnum::DEAD) => ContainerState::Dead,
        Some(ContainerStateStatusEnum::CREATED) | Some(ContainerStateStatusEnum::EMPTY) | None => {
            ContainerState::Created
        }
    }
}

fn summary_state_of(status: Option<ContainerSummaryStateEnum>) -> ContainerState {
    match status {
        Some(ContainerSummaryStateEnum::RUNNING) => ContainerState::Running,
        Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerSummaryStateEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerSummaryStateEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerSummaryStateEnum::EXITED) | Some(ContainerSummaryStateEnum::STOPPING) => {
            ContainerState::Exited
        }
        Some(ContainerSummaryStateEnum::DEAD) => ContainerState::Dead,
        _ => ContainerState::Created,
    }
}

/// A container as `inspect` shows it. `image_env` is the environment the
/// container's image sets, left out of the material so only what berth
/// passed is compared. `None` when the answer lacks an id or name.
pub fn from_inspect(
    c: &ContainerInspectResponse,
    image_env: &[String],
) -> Option<ObservedContainer> {
    let id = c.id.clone()?;
    let name = c.name.as_deref()?.trim_start_matches('/').to_string();
    let config = c.config.as_ref();
    let state = c.state.as_ref();
    let health = match state.and_then(|s| s.health.as_ref()).and_then(|h| h.status) {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        _ => Health::None,
    };
    Some(ObservedContainer {
        name,
        labels: labels(config.and_then(|c| c.labels.as_ref())),
        state: state_of(state.and_then(|s| s.status)),
        health,
        image: config.and_then(|c| c.image.clone()).unwrap_or_default(),
        image_id: c.image.clone().unwrap_or_default(),
        created: time(c.created.as_deref()).unwrap_or_default(),
        started_at: time(state.and_then(|s| s.started_at.as_deref())),
        finished_at: time(state.and_then(|s| s.finished_at.as_deref())),
        restart_count: c.restart_count.unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
        exit_code: state.and_then(|s| s.exit_code),
        oom_killed: state.and_then(|s| s.oom_killed).unwrap_or(false),
        networks: Some(
            c.network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .map(|n| n.keys().cloned().collect())
                .unwrap_or_default(),
        ),
        material: Some(material(c, &id, image_env)),
        id,
    })
}

/// The material fields as the engine reports them (see `Material`).
fn material(c: &ContainerInspectResponse, id: &str, image_env: &[String]) -> Material {
    let config = c.config.as_ref();
    let host = c.host_config.as_ref();
    let env = config
        .and_then(|c| c.env.as_ref())
        .map(|env| {
            env.iter()
                .filter(|kv| !image_env.contains(kv))
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| EnvVar::new(k, v))
                .collect()
        })
        .unwrap_or_default();
    let network_mode = host
        .and_then(|h| h.network_mode.clone())
        .unwrap_or_default();
    // The engine adds the container's short id to its aliases itself.
    let network_aliases = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| n.get(&network_mode))
        .and_then(|e| e.aliases.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|a| !id.starts_with(a.as_str()))
        .collect();
    let mut ports: Vec<String> = host
        .and_then(|h| h.port_bindings.as_ref())
        .map(|bindings| {
            bindings
                .iter()
                .flat_map(|(port, list)| {
                    list.iter().flatten().map(move |b| {
                        format!(
                            "{}:{}:{}",
                            b.host_ip.as_deref().unwrap_or(""),
                            b.host_port.as_deref().unwrap_or(""),
                            port
                        )
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    ports.sort();
    Material {
        image: config.and_then(|c| c.image.clone()).unwrap_or_default(),
        env,
        binds: host.and_then(|h| h.binds.clone()).unwrap_or_default(),
        tmpfs: host
            .and_then(|h| h.tmpfs.as_ref())
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        readonly_rootfs: host.and_then(|h| h.readonly_rootfs).unwrap_or(false),
        memory: host.and_then(|h| h.memory).unwrap_or(0),
        nano_cpus: host.and_then(|h| h.nano_cpus).unwrap_or(0),
        privileged: host.and_then(|h| h.privileged).unwrap_or(false),
        pid_mode: host.and_then(|h| h.pid_mode.clone()).unwrap_or_default(),
        network_mode,
        network_aliases,
        ports,
    }
}

/// A container berth does not own, as listed: enough to see a name clash,
/// never inspected and never acted on.
pub fn from_summary(c: &ContainerSummary) -> Option<ObservedContainer> {
    let id = c.id.clone()?;
    let name = c
        .names
        .as_ref()?
        .first()?
        .trim_start_matches('/')
        .to_string();
    Some(ObservedContainer {
        id,
        name,
        labels: labels(c.labels.as_ref()),
        state: summary_state_of(c.state),
        health: Health::None,
        image: c.image.clone().unwrap_or_default(),
        image_id: c.image_id.clone().unwrap_or_default(),
        created: c
            .created
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .unwrap_or_default(),
        started_at: None,
        finished_at: None,
        restart_count: 0,
        exit_code: None,
        oom_killed: false,
        networks: None,
        material: None,
    })
}

pub fn volume(v: &Volume) -> ObservedVolume {
    ObservedVolume {
        name: v.name.clone(),
        labels: v
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_zero_time_is_never() {
        assert_eq!(time(Some("0001-01-01T00:00:00Z")), None);
        assert!(time(Some("2026-11-23T18:48:39.003984388Z")).is_some());
        assert_eq!(time(Some("not a time")), None);
        assert_eq!(time(None), None);
    }

    #[test]
    fn an_inspect_without_id_or_name_is_skipped_not_a_panic() {
        assert!(from_inspect(&ContainerInspectResponse::default(), &[]).is_none());
        assert!(from_summary(&ContainerSummary::default()).is_none());
    }
}
