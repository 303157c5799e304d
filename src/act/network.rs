//! The workspace network: created (labelled) when missing. berth only
//! joins it — containers get it and their alias at create — and never
//! changes or removes a network, so one it did not create (the platform's
//! compose network, say) is used as found.

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::InspectNetworkOptions;

use crate::docker::DockerError;
use crate::model::{LABEL_HOST, LABEL_MANAGED};

use super::{ActError, Executor, docker_labels};

impl Executor {
    /// Makes sure the bridge network `name` exists. Calls are serialized
    /// in this process: the engine (API 1.41) accepts two networks of one
    /// name, so a check-then-create must not race itself.
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
                other => return Err(ActError::docker("inspect network", other)),
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
            .map(drop)
            .map_err(|e| ActError::docker("create network", e))
    }
}
