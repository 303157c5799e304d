//! Volumes: ensure (create labelled, then judge the labels the engine
//! answers with — it keeps an existing volume's old labels silently) and
//! remove (only a volume of this host's).

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::RemoveVolumeOptionsBuilder;

use crate::docker::DockerError;
use crate::model::{LABEL_WORKSPACE, VolumeSpec, WorkspaceId};

use super::{ActError, Executor, Object, docker_labels};

impl Executor {
    /// Creates the volume if absent; true when this call made it (it was
    /// not there). The engine answers a create of an existing name with
    /// that volume as it is, so its labels are judged here: a volume
    /// without berth's label, of another host or of another workspace is a
    /// `name_conflict`, left as it was.
    pub async fn ensure_volume(&self, spec: &VolumeSpec) -> Result<bool, ActError> {
        // The create's answer does not say whether it made the volume.
        let made = match self.docker.inspect_volume(&spec.name).await {
            Ok(_) => false,
            Err(e) => match DockerError::from(e) {
                DockerError::NotFound { .. } => true,
                other => return Err(ActError::docker("inspect volume", other)),
            },
        };
        let request = VolumeCreateRequest {
            name: Some(spec.name.clone()),
            labels: Some(docker_labels(&spec.labels)),
            ..Default::default()
        };
        super::may_change("create volume")?;
        let volume = self
            .docker
            .create_volume(request)
            .await
            .map_err(|e| ActError::docker("create volume", e))?;
        let workspace = spec
            .labels
            .get(LABEL_WORKSPACE)
            .and_then(|w| w.parse::<WorkspaceId>().ok());
        // The Go provisioner's /workspace volume was made by its bind, with
        // no labels; its name carries the full workspace id, so it is that
        // workspace's, adopted with its data.
        if let Some(id) = workspace
            && implicit_workspace_volume(&spec.name, &volume.labels) == Some(id)
        {
            return Ok(made);
        }
        match self.not_owned(Some(&volume.labels), workspace) {
            Some(detail) => Err(ActError::NameConflict {
                object: Object::Volume,
                name: spec.name.clone(),
                detail,
            }),
            None => Ok(made),
        }
    }

    /// Discards a session volume for the session epoch `epoch`: removed
    /// unless it already records that epoch or a later one (a discard
    /// made before, which the planner's view had not caught up with).
    pub async fn discard_session(&self, name: &str, epoch: i64) -> Result<(), ActError> {
        let recorded = match self.docker.inspect_volume(name).await {
            Ok(v) => v
                .labels
                .get(crate::model::LABEL_SESSION_EPOCH)
                .map_or(Some(0), |e| e.parse::<i64>().ok()),
            Err(e) => {
                return match DockerError::from(e) {
                    DockerError::NotFound { .. } => Ok(()),
                    other => Err(ActError::docker("inspect volume", other)),
                };
            }
        };
        if recorded.is_some_and(|r| r >= epoch) {
            tracing::info!(volume = name, epoch, "session volume already fresh; kept");
            return Ok(());
        }
        self.remove_volume(name).await
    }

    /// Removes the volume when it is this host's; gone already is done. A
    /// volume still in use is a conflict (the container goes first).
    pub async fn remove_volume(&self, name: &str) -> Result<(), ActError> {
        let volume = match self.docker.inspect_volume(name).await {
            Ok(v) => v,
            Err(e) => {
                return match DockerError::from(e) {
                    DockerError::NotFound { .. } => Ok(()),
                    other => Err(ActError::docker("inspect volume", other)),
                };
            }
        };
        let implicit = implicit_workspace_volume(name, &volume.labels).is_some();
        if let Some(detail) = self
            .not_owned(Some(&volume.labels), None)
            .filter(|_| !implicit)
        {
            return Err(ActError::NameConflict {
                object: Object::Volume,
                name: name.to_string(),
                detail,
            });
        }
        let opts = RemoveVolumeOptionsBuilder::new().force(false).build();
        super::may_change("remove volume")?;
        match self.docker.remove_volume(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) => match DockerError::from(e) {
                DockerError::NotFound { .. } => Ok(()),
                other => Err(ActError::docker("remove volume", other)),
            },
        }
    }
}

/// The workspace whose Go-era, unlabelled `ws-<full id>-workspace` volume
/// this is, if it is one.
fn implicit_workspace_volume(
    name: &str,
    labels: &std::collections::HashMap<String, String>,
) -> Option<WorkspaceId> {
    if !labels.is_empty() {
        return None;
    }
    let id: WorkspaceId = name
        .strip_prefix("ws-")?
        .strip_suffix("-workspace")?
        .parse()
        .ok()?;
    (id.workspace_volume() == name).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unlabelled_full_id_workspace_volume_is_implicit() {
        let id: WorkspaceId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
        let none = std::collections::HashMap::new();
        assert_eq!(
            implicit_workspace_volume(&id.workspace_volume(), &none),
            Some(id)
        );
        assert_eq!(implicit_workspace_volume(&id.configs_volume(), &none), None);
        assert_eq!(
            implicit_workspace_volume("ws-nonsense-workspace", &none),
            None
        );
        let labelled = std::collections::HashMap::from([("x".to_string(), "y".to_string())]);
        assert_eq!(
            implicit_workspace_volume(&id.workspace_volume(), &labelled),
            None
        );
    }
}
