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

/// When a look at the engine began: taken before the request is sent, so a
/// later ticket's answer reflects everything that finished before an
/// earlier one's answer could.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

#[derive(Debug, Default)]
struct Cache {
    containers: HashMap<String, ObservedContainer>,
    volumes: HashMap<String, ObservedVolume>,
    /// The ticket of the look each container's entry (or its removal)
    /// came from, for ids looked at since the last full list; older ones
    /// are as old as that list.
    seen: HashMap<String, Ticket>,
    /// The same for volumes, by name.
    seen_volumes: HashMap<String, Ticket>,
    /// The ticket of the last full list that landed.
    listed: Ticket,
    next: u64,
    complete: bool,
    relists: u64,
}

impl Cache {
    /// Whether an answer to the look `at` about `key` (in `seen`) is older
    /// than what the cache holds.
    fn stale(listed: Ticket, seen: &HashMap<String, Ticket>, key: &str, at: Ticket) -> bool {
        let stale = at < listed || seen.get(key).is_some_and(|held| *held > at);
        if stale {
            tracing::debug!(object = %key, "an answer older than the cache's is dropped");
        }
        stale
    }
}

/// Lays what looks begun after a full list (at `at`) saw over that list:
/// an entry they saw is kept as they saw it, one they saw gone stays gone.
fn keep_later<T: Clone>(
    seen: &mut HashMap<String, Ticket>,
    held: &HashMap<String, T>,
    listed: &mut HashMap<String, T>,
    at: Ticket,
) {
    seen.retain(|_, t| *t > at);
    for key in seen.keys() {
        match held.get(key) {
            Some(newer) => listed.insert(key.clone(), newer.clone()),
            None => listed.remove(key),
        };
    }
}

/// A read handle on the observed cache; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    inner: Arc<RwLock<Cache>>,
    /// A full relist asked for by the controller (its database session
    /// came back: both sides are read anew).
    relist: Arc<tokio::sync::Notify>,
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

    /// A ticket for a look at the engine about to begin.
    pub(super) fn ticket(&self) -> Ticket {
        self.write(|c| {
            c.next += 1;
            Ticket(c.next)
        })
    }

    /// Replaces everything with a full list begun at `at`: no key of the
    /// old cache survives unless a look begun after the list saw it, and a
    /// container such a look saw gone stays gone. A list takes seconds on a
    /// busy engine; without this, its swap would undo what a pass did and
    /// saw in the meantime, and the next pass would plan on the past.
    /// Whether the cache says anything new: it was incomplete, or the list
    /// differs from what the events had kept it at.
    pub(super) fn replace(
        &self,
        mut containers: HashMap<String, ObservedContainer>,
        mut volumes: HashMap<String, ObservedVolume>,
        at: Ticket,
    ) -> bool {
        self.write(|c| {
            keep_later(&mut c.seen, &c.containers, &mut containers, at);
            keep_later(&mut c.seen_volumes, &c.volumes, &mut volumes, at);
            if !c.seen.is_empty() || !c.seen_volumes.is_empty() {
                tracing::debug!(
                    kept = c.seen.len() + c.seen_volumes.len(),
                    "a full list keeps what later looks saw"
                );
            }
            let changed = !c.complete || c.containers != containers || c.volumes != volumes;
            c.containers = containers;
            c.volumes = volumes;
            c.listed = c.listed.max(at);
            c.complete = true;
            c.relists += 1;
            changed
        })
    }

    /// Stores what a look begun at `at` saw of one container, unless a
    /// later look already told more.
    pub(super) fn upsert(&self, container: ObservedContainer, at: Ticket) {
        self.write(|c| {
            if Cache::stale(c.listed, &c.seen, &container.id, at) {
                return;
            }
            c.seen.insert(container.id.clone(), at);
            c.containers.insert(container.id.clone(), container);
        });
    }

    /// Drops a container a look begun at `at` found gone, unless a later
    /// look saw it.
    pub(super) fn remove(&self, id: &str, at: Ticket) {
        self.write(|c| {
            if Cache::stale(c.listed, &c.seen, id, at) {
                return;
            }
            c.seen.insert(id.to_string(), at);
            c.containers.remove(id);
        });
    }

    /// Stores what a look begun at `at` saw of the volume `name`: `None`
    /// when it is gone. Dropped when a later look already told more.
    pub(super) fn set_volume(&self, name: &str, volume: Option<ObservedVolume>, at: Ticket) {
        self.write(|c| {
            if Cache::stale(c.listed, &c.seen_volumes, name, at) {
                return;
            }
            c.seen_volumes.insert(name.to_string(), at);
            match volume {
                Some(v) => c.volumes.insert(name.to_string(), v),
                None => c.volumes.remove(name),
            };
        });
    }

    /// The workspace's own container: named `ws-<id12>` and labelled with
    /// its id.
    pub fn main_container(&self, id: WorkspaceId, host: &str) -> Option<ObservedContainer> {
        self.read(|c| {
            c.containers
                .values()
                .find(|o| o.is_main_of(id, host))
                .cloned()
        })
    }

    /// Every workspace's own container (as [`Observed::main_container`]),
    /// by workspace, read in one pass over the cache.
    pub fn main_containers(&self, host: &str) -> HashMap<WorkspaceId, ObservedContainer> {
        self.read(|c| {
            c.containers
                .values()
                .filter_map(|o| {
                    let id = o.workspace()?;
                    o.is_main_of(id, host).then(|| (id, o.clone()))
                })
                .collect()
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

    /// Marks the cache incomplete; true when it was complete.
    pub(super) fn mark_incomplete(&self) -> bool {
        self.write(|c| std::mem::replace(&mut c.complete, false))
    }

    /// Asks the observer for a full relist now.
    pub fn request_relist(&self) {
        self.relist.notify_one();
    }

    /// Resolves when a relist was asked for.
    pub(super) async fn relist_requested(&self) {
        self.relist.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;

    use super::*;
    use crate::model::{ContainerState, Health};

    fn container(id: &str, state: ContainerState) -> ObservedContainer {
        ObservedContainer {
            id: id.to_string(),
            name: format!("ws-{id}"),
            labels: BTreeMap::new(),
            state,
            health: Health::None,
            image: "img".into(),
            image_id: "sha256:1".into(),
            created: Utc::now(),
            started_at: None,
            finished_at: None,
            restart_count: 0,
            exit_code: None,
            oom_killed: false,
            networks: None,
            material: None,
        }
    }

    fn listed(cs: &[ObservedContainer]) -> HashMap<String, ObservedContainer> {
        cs.iter().map(|c| (c.id.clone(), c.clone())).collect()
    }

    fn state(cache: &Observed, id: &str) -> Option<ContainerState> {
        cache.container(id).map(|c| c.state)
    }

    #[test]
    fn a_list_says_whether_it_showed_anything_the_cache_lacked() {
        let cache = Observed::default();
        let first = listed(&[container("a", ContainerState::Running)]);
        let t = cache.ticket();
        assert!(
            cache.replace(first.clone(), HashMap::new(), t),
            "the first list"
        );
        let t = cache.ticket();
        assert!(
            !cache.replace(first.clone(), HashMap::new(), t),
            "the same again"
        );
        let t = cache.ticket();
        cache.upsert(container("a", ContainerState::Exited), t);
        let t = cache.ticket();
        assert!(
            cache.replace(first.clone(), HashMap::new(), t),
            "a list that differs from what the events kept"
        );
        cache.mark_incomplete();
        let t = cache.ticket();
        assert!(
            cache.replace(first, HashMap::new(), t),
            "a list after the stream was lost"
        );
    }

    #[test]
    fn a_list_that_began_before_a_look_keeps_what_the_look_saw() {
        let cache = Observed::default();
        let list = cache.ticket();
        let look = cache.ticket();
        cache.upsert(container("a", ContainerState::Running), look);
        cache.remove("b", look);
        // The list saw `a` still created and `b` still there.
        cache.replace(
            listed(&[
                container("a", ContainerState::Created),
                container("b", ContainerState::Running),
                container("c", ContainerState::Running),
            ]),
            HashMap::new(),
            list,
        );
        assert_eq!(state(&cache, "a"), Some(ContainerState::Running));
        assert_eq!(state(&cache, "b"), None);
        assert_eq!(state(&cache, "c"), Some(ContainerState::Running));
        assert!(cache.is_complete());
    }

    #[test]
    fn a_look_that_began_before_another_does_not_overwrite_it() {
        let cache = Observed::default();
        let early = cache.ticket();
        let late = cache.ticket();
        cache.upsert(container("a", ContainerState::Running), late);
        cache.upsert(container("a", ContainerState::Created), early);
        assert_eq!(state(&cache, "a"), Some(ContainerState::Running));
        cache.remove("a", early);
        assert_eq!(state(&cache, "a"), Some(ContainerState::Running));
        let later = cache.ticket();
        cache.remove("a", later);
        assert_eq!(state(&cache, "a"), None);
        cache.upsert(container("a", ContainerState::Running), late);
        assert_eq!(
            state(&cache, "a"),
            None,
            "a stale look revived a gone container"
        );
    }

    #[test]
    fn a_list_replaces_what_looks_before_it_saw() {
        let cache = Observed::default();
        let look = cache.ticket();
        cache.upsert(container("a", ContainerState::Running), look);
        let list = cache.ticket();
        cache.replace(
            listed(&[container("b", ContainerState::Running)]),
            HashMap::new(),
            list,
        );
        assert_eq!(state(&cache, "a"), None, "no key of the old cache survives");
        assert_eq!(state(&cache, "b"), Some(ContainerState::Running));
        // A look begun before that list is older than it.
        cache.upsert(container("a", ContainerState::Running), look);
        assert_eq!(state(&cache, "a"), None);
        let after = cache.ticket();
        cache.upsert(container("a", ContainerState::Exited), after);
        assert_eq!(state(&cache, "a"), Some(ContainerState::Exited));
    }

    fn volume(name: &str, epoch: &str) -> ObservedVolume {
        ObservedVolume {
            name: name.to_string(),
            labels: BTreeMap::from([("epoch".to_string(), epoch.to_string())]),
        }
    }

    fn epoch(cache: &Observed, name: &str) -> Option<String> {
        let (_, volumes, _) = cache.snapshot();
        volumes
            .into_iter()
            .find(|v| v.name == name)
            .map(|v| v.label("epoch").unwrap_or_default().to_string())
    }

    #[test]
    fn a_volume_look_outlives_an_older_list_and_loses_to_a_newer_one() {
        let cache = Observed::default();
        let list = cache.ticket();
        let look = cache.ticket();
        // A pass discarded the session and made it anew (epoch 2) while a
        // list that still saw epoch 1 was on its way.
        cache.set_volume("s", Some(volume("s", "2")), look);
        cache.set_volume("gone", None, look);
        let old: HashMap<_, _> = [volume("s", "1"), volume("gone", "1")]
            .into_iter()
            .map(|v| (v.name.clone(), v))
            .collect();
        cache.replace(HashMap::new(), old, list);
        assert_eq!(epoch(&cache, "s").as_deref(), Some("2"));
        assert_eq!(epoch(&cache, "gone"), None);
        // An older look does not overwrite; a later list replaces all.
        cache.set_volume("s", Some(volume("s", "1")), list);
        assert_eq!(epoch(&cache, "s").as_deref(), Some("2"));
        let later = cache.ticket();
        cache.replace(HashMap::new(), HashMap::new(), later);
        assert_eq!(epoch(&cache, "s"), None);
    }
}
