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
                        Some(()) => Ok(()),
                        None => Err(ActError::docker("inspect network", other)),
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
        self.docker
            .create_network(request)
            .await
            .map_err(|e| ActError::docker("create network", e))?;
        match self.one_network(name).await? {
            Some(()) => Ok(()),
            None => Err(ActError::docker(
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
    /// `Some` when exactly one is left, `None` when there is none; an
    /// error while others' duplicates remain (their berth removes them).
    async fn one_network(&self, name: &str) -> Result<Option<()>, ActError> {
        let options = ListNetworksOptionsBuilder::new()
            .filters(&HashMap::from([("name", vec![name])]))
            .build();
        let listed = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| ActError::docker("list networks", e))?;
        // The name filter matches parts of names too.
        let mut same: Vec<Network> = listed
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .collect();
        if same.len() > 1 {
            // One with containers on it stays (the list does not say: ask
            // each), then the lowest id: every berth picks the same one.
            let mut in_use = Vec::with_capacity(same.len());
            for n in &same {
                let id = n.id.clone().unwrap_or_default();
                let used = match self
                    .docker
                    .inspect_network(&id, None::<InspectNetworkOptions>)
                    .await
                {
                    Ok(full) => full.containers.is_some_and(|c| !c.is_empty()),
                    Err(_) => false,
                };
                in_use.push((!used, id));
            }
            let mut order: Vec<usize> = (0..same.len()).collect();
            order.sort_by(|a, b| in_use[*a].cmp(&in_use[*b]));
            same = order.into_iter().map(|i| same[i].clone()).collect();
        }
        let Some((keep, others)) = same.split_first() else {
            return Ok(None);
        };
        let mut left = 0;
        for n in others {
            let labels = n.labels.clone().unwrap_or_default();
            let mine = labels.get(LABEL_MANAGED).map(String::as_str) == Some("true")
                && labels.get(LABEL_HOST) == Some(&self.settings.host_id);
            let Some(id) = n.id.as_deref().filter(|_| mine) else {
                left += 1;
                continue;
            };
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
                        kept = keep.id.as_deref().unwrap_or(""),
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
        Ok(Some(()))
    }
}
