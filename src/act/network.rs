//! The workspace network: created (labelled) when missing. berth only
//! joins it — containers get it and their alias at create — and never
//! changes or removes a network, so one it did not create (the platform's
//! compose network, say) is used as found.

use std::collections::HashMap;

use bollard::models::{Network, NetworkCreateRequest};
use bollard::query_parameters::{InspectNetworkOptions, ListNetworksOptionsBuilder};

use crate::docker::DockerError;
use crate::model::{LABEL_HOST, LABEL_MANAGED};

use super::{ActError, Executor, docker_labels};

impl Executor {
    /// Makes sure the bridge network `name` exists, once. Calls are
    /// serialized in this process; another process (a berth of another
    /// host on this engine) may race the check-then-create, and the engine
    /// (API 1.41) accepts two networks of one name, after which the name
    /// no longer resolves ("2 matches found"). So after a create, and
    /// whenever the name does not resolve, the networks of that name are
    /// listed: every process keeps the same one (in use, else the lowest
    /// id) and removes its own others (never one it did not create).
    pub async fn ensure_network(&self, name: &str) -> Result<(), ActError> {
        let _guard = self.network_lock.lock().await;
        match self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => match DockerError::from(e) {
                DockerError::NotFound { .. } => {}
                other => {
                    // A name several networks hold does not resolve.
                    return match self.one_network(name).await? {
                        true => Ok(()),
                        false => Err(ActError::docker("inspect network", other)),
                    };
                }
            },
        }
        let mut labels = self.settings.network_labels.clone();
        labels.insert(LABEL_MANAGED.into(), "true".into());
        labels.insert(LABEL_HOST.into(), self.settings.host_id.clone());
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(docker_labels(&labels)),
            ..Default::default()
        };
        super::may_change("create network")?;
        self.docker
            .create_network(request)
            .await
            .map_err(|e| ActError::docker("create network", e))?;
        match self.one_network(name).await? {
            true => Ok(()),
            false => Err(ActError::docker(
                "create network",
                DockerError::Other {
                    message: format!("network {name} is gone right after its create"),
                },
            )),
        }
    }

    /// Leaves one network named `name` where a race made several: one in
    /// use, else the one with the lowest id, stays, and those of the
    /// others this host made go.
    /// True when exactly one is left, false when there is none; an error
    /// while others' duplicates remain (their berth removes them).
    async fn one_network(&self, name: &str) -> Result<bool, ActError> {
        let options = ListNetworksOptionsBuilder::new()
            .filters(&HashMap::from([("name", vec![name])]))
            .build();
        let listed = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| ActError::docker("list networks", e))?;
        // The name filter matches parts of names too. One with containers
        // on it stays (the list does not say: ask each), then the lowest
        // id: every berth picks the same one.
        let mut same: Vec<(bool, String, Network)> = Vec::new();
        for n in listed
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
        {
            let id = n.id.clone().unwrap_or_default();
            let unused = match self
                .docker
                .inspect_network(&id, None::<InspectNetworkOptions>)
                .await
            {
                Ok(full) => full.containers.is_none_or(|c| c.is_empty()),
                Err(_) => true,
            };
            same.push((unused, id, n));
        }
        same.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let Some(((_, keep, _), others)) = same.split_first() else {
            return Ok(false);
        };
        let mut left = 0;
        for (_, _, n) in others {
            let labels = n.labels.clone().unwrap_or_default();
            let mine = labels.get(LABEL_MANAGED).map(String::as_str) == Some("true")
                && labels.get(LABEL_HOST) == Some(&self.settings.host_id);
            let Some(id) = n.id.as_deref().filter(|_| mine) else {
                left += 1;
                continue;
            };
            super::may_change("remove network")?;
            match self
                .docker
                .remove_network(id)
                .await
                .map_err(DockerError::from)
            {
                Ok(()) | Err(DockerError::NotFound { .. }) => {
                    tracing::warn!(
                        network = name,
                        removed = id,
                        kept = keep,
                        "a second network of the name (a create raced another berth's) removed"
                    );
                }
                Err(error) => {
                    tracing::warn!(network = name, id, %error, "removing a duplicate network failed");
                    left += 1;
                }
            }
        }
        if left > 0 {
            return Err(ActError::docker(
                "ensure network",
                DockerError::Conflict {
                    message: format!(
                        "{} networks are named {name}; berth keeps the one in use (else the lowest id) and removes only its own: another host's berth removes the others, or an operator does",
                        left + 1
                    ),
                },
            ));
        }
        Ok(true)
    }
}
