//! The observer task: full lists, the event stream, reconnects.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{
    EventsOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    ListVolumesOptionsBuilder,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::convert;
use super::{Observed, Trigger};
use crate::docker::DockerError;
use crate::model::{LABEL_HOST, LABEL_MANAGED, LABEL_WORKSPACE, ObservedContainer, WorkspaceId};

/// Container events that can change what berth sees. Exec events (a
/// health check runs one every interval) are left out.
const EVENTS: &[&str] = &[
    "create",
    "start",
    "restart",
    "die",
    "kill",
    "stop",
    "destroy",
    "rename",
    "oom",
    "pause",
    "unpause",
    "update",
    "health_status",
];

/// Replays this much of the engine's event history on a (re)connect, so
/// nothing between the list and the stream's start is missed; replayed
/// events are applied by re-inspecting, which is idempotent.
const REPLAY: Duration = Duration::from_secs(2);

/// Lists and watches the engine, keeping an [`Observed`] cache.
#[derive(Debug)]
pub struct Observer {
    docker: Docker,
    host: String,
    relist_every: Duration,
    cache: Observed,
    triggers: mpsc::UnboundedSender<Trigger>,
    /// The env each image sets, by image id: left out of material.
    image_env: HashMap<String, Vec<String>>,
}

fn managed_filter() -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{LABEL_MANAGED}=true")])])
}

fn name_filter() -> HashMap<String, Vec<String>> {
    HashMap::from([("name".to_string(), vec!["ws-".to_string()])])
}

impl Observer {
    /// An observer for `host`, the cache it fills, and the triggers it
    /// sends (workspace keys that changed, or "all" after a relist).
    pub fn new(
        docker: Docker,
        host: &str,
        relist_every: Duration,
    ) -> (Self, Observed, mpsc::UnboundedReceiver<Trigger>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let cache = Observed::default();
        let observer = Observer {
            docker,
            host: host.to_string(),
            relist_every,
            cache: cache.clone(),
            triggers: tx,
            image_env: HashMap::new(),
        };
        (observer, cache, rx)
    }

    fn owns(&self, labels: &HashMap<String, String>) -> bool {
        labels.get(LABEL_MANAGED).map(String::as_str) == Some("true")
            && labels.get(LABEL_HOST).is_none_or(|h| *h == self.host)
    }

    fn trigger(&self, t: Trigger) {
        // The controller may have stopped listening during shutdown.
        let _ = self.triggers.send(t);
    }

    /// Runs until `cancel`: relist, stream events, relist periodically;
    /// on a lost stream, mark the cache incomplete and reconnect with
    /// jittered backoff.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = crate::backoff::reconnect();
        loop {
            let since = chrono::Utc::now() - REPLAY;
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                outcome = self.session(since.timestamp()) => outcome,
            };
            if self.cache.mark_incomplete() {
                // Readiness and the metrics say so now, not at the next
                // resync; passes meanwhile delete and create nothing.
                self.trigger(Trigger::All);
            }
            match outcome {
                Session::Healthy(reason) => {
                    tracing::warn!(%reason, "docker event stream lost; relisting");
                    backoff = crate::backoff::reconnect();
                }
                Session::Failed(error) => {
                    tracing::warn!(%error, "docker list failed; retrying");
                }
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(30));
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One connection: the full list, then events until the stream ends.
    async fn session(&mut self, since: i64) -> Session {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("label".to_string(), vec![format!("{LABEL_MANAGED}=true")]),
            (
                "event".to_string(),
                EVENTS.iter().map(|e| e.to_string()).collect(),
            ),
        ]);
        let opts = EventsOptionsBuilder::new()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        let mut events = Box::pin(self.docker.events(Some(opts)));
        if let Err(e) = self.relist().await {
            return Session::Failed(e);
        }
        // Every interval plus up to 10 % jitter, so hosts do not list in
        // step; at once when the controller asks.
        let jittered = |every: Duration| every + every.mul_f64(fastrand::f64() * 0.1);
        let relist = tokio::time::sleep(jittered(self.relist_every));
        tokio::pin!(relist);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        if let Err(e) = self.apply(event).await {
                            return Session::Failed(e);
                        }
                    }
                    Some(Err(e)) => return Session::Healthy(DockerError::from(e).to_string()),
                    None => return Session::Healthy("the engine closed the stream".into()),
                },
                () = &mut relist => {
                    relist.as_mut().reset(tokio::time::Instant::now() + jittered(self.relist_every));
                    if let Err(e) = self.relist().await {
                        return Session::Failed(e);
                    }
                }
                () = self.cache.relist_requested() => {
                    tracing::info!("relisting the engine's objects, as asked");
                    relist.as_mut().reset(tokio::time::Instant::now() + jittered(self.relist_every));
                    if let Err(e) = self.relist().await {
                        return Session::Failed(e);
                    }
                }
            }
        }
    }

    /// Lists everything again and replaces the cache in one swap. An error
    /// other than "not found" fails the whole list: a partial list would
    /// read as "absent".
    pub async fn relist(&mut self) -> Result<(), DockerError> {
        let at = self.cache.ticket();
        let mut summaries = Vec::new();
        for filters in [managed_filter(), name_filter()] {
            let opts = ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build();
            summaries.extend(self.docker.list_containers(Some(opts)).await?);
        }
        let mut containers = HashMap::new();
        for summary in &summaries {
            let Some(id) = summary.id.as_deref() else {
                continue;
            };
            if containers.contains_key(id) {
                continue;
            }
            let labels = summary.labels.clone().unwrap_or_default();
            let observed = if self.owns(&labels) {
                match self.inspect(id).await {
                    Ok(c) => c,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e),
                }
            } else {
                convert::from_summary(summary)
            };
            if let Some(c) = observed {
                containers.insert(c.id.clone(), c);
            }
        }
        let mut volumes = HashMap::new();
        for filters in [managed_filter(), name_filter()] {
            let opts = ListVolumesOptionsBuilder::new().filters(&filters).build();
            let listed = self.docker.list_volumes(Some(opts)).await?;
            for v in listed.volumes.unwrap_or_default() {
                volumes.insert(v.name.clone(), convert::volume(&v));
            }
        }
        // A list that finds what the events already showed has nothing to
        // plan on; the controller's own resync still passes every key.
        if self.cache.replace(containers, volumes, at) {
            self.trigger(Trigger::All);
        }
        Ok(())
    }

    async fn inspect(&mut self, id: &str) -> Result<Option<ObservedContainer>, DockerError> {
        inspect(&self.docker, id, &mut self.image_env).await
    }

    /// Applies one event: re-inspect the container (or drop it when it is
    /// gone) and trigger its workspace. Events of other hosts' containers
    /// are ignored; those are seen by the relist, for name clashes only.
    async fn apply(&mut self, event: EventMessage) -> Result<(), DockerError> {
        if event.typ != Some(EventMessageTypeEnum::CONTAINER) {
            return Ok(());
        }
        let Some(actor) = event.actor else {
            return Ok(());
        };
        let Some(id) = actor.id else { return Ok(()) };
        let attributes = actor.attributes.unwrap_or_default();
        if !self.owns(&attributes) {
            return Ok(());
        }
        let destroyed = event.action.as_deref() == Some("destroy");
        let at = self.cache.ticket();
        if destroyed {
            self.cache.remove(&id, at);
        } else {
            match self.inspect(&id).await {
                Ok(Some(c)) => self.cache.upsert(c, at),
                Ok(None) => {}
                Err(e) if e.is_not_found() => {
                    self.cache.remove(&id, at);
                }
                Err(e) => return Err(e),
            }
        }
        let workspace = attributes
            .get(LABEL_WORKSPACE)
            .and_then(|w| w.parse::<WorkspaceId>().ok());
        self.trigger(workspace.map_or(Trigger::All, Trigger::Workspace));
        Ok(())
    }
}

/// How a connection ended.
enum Session {
    /// The list worked; the stream was lost later.
    Healthy(String),
    /// A list or inspect failed.
    Failed(DockerError),
}

/// Inspects one container into the model, with the env its image sets
/// (cached by image id in `image_env`) left out of its material.
async fn inspect(
    docker: &Docker,
    id: &str,
    image_env: &mut HashMap<String, Vec<String>>,
) -> Result<Option<ObservedContainer>, DockerError> {
    let info = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await?;
    let image_id = info.image.clone().unwrap_or_default();
    if !image_env.contains_key(&image_id) {
        let env = match docker
            .inspect_image(&image_id)
            .await
            .map_err(DockerError::from)
        {
            Ok(image) => image.config.and_then(|c| c.env).unwrap_or_default(),
            // An image removed under a container leaves nothing to subtract.
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e),
        };
        image_env.insert(image_id.clone(), env);
    }
    let env = image_env.get(&image_id).map(Vec::as_slice).unwrap_or(&[]);
    Ok(convert::from_inspect(&info, env))
}

/// Brings the cache up to date with one workspace's containers now: the
/// controller calls it after a pass changed them, so the next pass plans
/// on what the pass did, not on events still on their way (read your own
/// writes). Only this host's containers are inspected.
pub async fn sync_workspace(
    docker: &Docker,
    cache: &Observed,
    host: &str,
    id: WorkspaceId,
) -> Result<(), DockerError> {
    let at = cache.ticket();
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_WORKSPACE}={id}")])]);
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let listed = docker.list_containers(Some(opts)).await?;
    let mut image_env = HashMap::new();
    let mut seen = Vec::new();
    for summary in &listed {
        let labels = summary.labels.clone().unwrap_or_default();
        let owned = labels.get(LABEL_MANAGED).map(String::as_str) == Some("true")
            && labels.get(LABEL_HOST).is_none_or(|h| h == host);
        let Some(cid) = summary.id.as_deref() else {
            continue;
        };
        if !owned {
            continue;
        }
        match inspect(docker, cid, &mut image_env).await {
            Ok(Some(c)) => {
                seen.push(c.id.clone());
                cache.upsert(c, at);
            }
            Ok(None) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    for gone in cache.workspace_containers(id) {
        if !seen.contains(&gone) {
            cache.remove(&gone, at);
        }
    }
    // Its volumes too: a pass makes and removes them (a discarded session
    // comes back with a new epoch label), and the next pass plans on them.
    for name in id.volume_names() {
        match docker.inspect_volume(&name).await {
            Ok(v) => cache.set_volume(&name, Some(convert::volume(&v)), at),
            Err(e) => match DockerError::from(e) {
                DockerError::NotFound { .. } => cache.set_volume(&name, None, at),
                other => return Err(other),
            },
        }
    }
    Ok(())
}
