//! The cache the observer fills and the controller reads.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::model::{ObservedContainer, ObservedVolume, WorkspaceId};

/// Why the controller should look again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Something happened to this workspace's container.
    Workspace(WorkspaceId),
    /// A full relist landed (or an object without a workspace label
    /// changed): every key may have changed.
    All,
}

#[derive(Debug, Default)]
struct Cache {
    containers: HashMap<String, ObservedContainer>,
    volumes: HashMap<String, ObservedVolume>,
    complete: bool,
    relists: u64,
}

/// A read handle on the observed cache; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    inner: Arc<RwLock<Cache>>,
}

impl Observed {
    fn read<T>(&self, f: impl FnOnce(&Cache) -> T) -> T {
        // A panic elsewhere while holding the lock leaves whole maps
        // behind (every write replaces or inserts whole values), so the
        // data stays usable.
        f(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn write<T>(&self, f: impl FnOnce(&mut Cache) -> T) -> T {
        f(&mut self.inner.write().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether a full list of this process has landed since the stream was
    /// last lost. Until then nothing may be deleted on what the cache says.
    pub fn is_complete(&self) -> bool {
        self.read(|c| c.complete)
    }

    /// Full lists landed since start.
    pub fn relists(&self) -> u64 {
        self.read(|c| c.relists)
    }

    /// Containers, sorted by id, and volumes, sorted by name, with the
    /// completeness flag, read at one instant.
    pub fn snapshot(&self) -> (Vec<ObservedContainer>, Vec<ObservedVolume>, bool) {
        self.read(|c| {
            let mut containers: Vec<_> = c.containers.values().cloned().collect();
            containers.sort_by(|a, b| a.id.cmp(&b.id));
            let mut volumes: Vec<_> = c.volumes.values().cloned().collect();
            volumes.sort_by(|a, b| a.name.cmp(&b.name));
            (containers, volumes, c.complete)
        })
    }

    pub fn container(&self, id: &str) -> Option<ObservedContainer> {
        self.read(|c| c.containers.get(id).cloned())
    }

    /// Replaces everything at once: no key of the old cache survives.
    pub(super) fn replace(
        &self,
        containers: HashMap<String, ObservedContainer>,
        volumes: HashMap<String, ObservedVolume>,
    ) {
        self.write(|c| {
            c.containers = containers;
            c.volumes = volumes;
            c.complete = true;
            c.relists += 1;
        });
    }

    pub(super) fn upsert(&self, container: ObservedContainer) {
        self.write(|c| c.containers.insert(container.id.clone(), container));
    }

    pub(super) fn remove(&self, id: &str) -> Option<ObservedContainer> {
        self.write(|c| c.containers.remove(id))
    }

    /// The workspace's own container: named `ws-<id12>` and labelled with
    /// its id.
    pub fn main_container(&self, id: WorkspaceId) -> Option<ObservedContainer> {
        let (name, label) = (id.container_name(), id.to_string());
        self.read(|c| {
            c.containers
                .values()
                .find(|o| {
                    o.name == name && o.label(crate::model::LABEL_WORKSPACE) == Some(label.as_str())
                })
                .cloned()
        })
    }

    /// Ids of the cached containers labelled with workspace `id`.
    pub(super) fn workspace_containers(&self, id: WorkspaceId) -> Vec<String> {
        let label = id.to_string();
        self.read(|c| {
            c.containers
                .values()
                .filter(|o| o.label(crate::model::LABEL_WORKSPACE) == Some(label.as_str()))
                .map(|o| o.id.clone())
                .collect()
        })
    }

    pub(super) fn mark_incomplete(&self) {
        self.write(|c| c.complete = false);
    }
}
