//! Tasks that remember what they work on, so a task that panics still
//! gives its key back.
//!
//! A pass or a refresh that panics never reaches the code that frees its
//! key; without the key, its workspace would stay "in flight" forever and
//! never be reconciled again (or its image never refreshed again).

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{JoinError, JoinSet};

/// How a task ended.
#[derive(Debug)]
pub enum Ended<K, T> {
    /// It returned.
    Done(T),
    /// It panicked, or was cancelled, before returning.
    Lost { key: K, error: JoinError },
}

/// A [`JoinSet`] whose tasks each carry a key.
#[derive(Debug)]
pub struct Tasks<K, T> {
    set: JoinSet<T>,
    keys: HashMap<tokio::task::Id, K>,
}

impl<K, T: Send + 'static> Default for Tasks<K, T> {
    fn default() -> Self {
        Tasks {
            set: JoinSet::new(),
            keys: HashMap::new(),
        }
    }
}

impl<K, T: Send + 'static> Tasks<K, T> {
    pub fn spawn(&mut self, key: K, task: impl Future<Output = T> + Send + 'static) {
        let handle = self.set.spawn(task);
        self.keys.insert(handle.id(), key);
    }

    /// The next task to end; `None` at once while none runs.
    pub async fn next(&mut self) -> Option<Ended<K, T>> {
        loop {
            match self.set.join_next_with_id().await? {
                Ok((id, value)) => {
                    self.keys.remove(&id);
                    return Some(Ended::Done(value));
                }
                Err(error) => {
                    // Every spawned task has a key.
                    if let Some(key) = self.keys.remove(&error.id()) {
                        return Some(Ended::Lost { key, error });
                    }
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn abort_all(&mut self) {
        self.set.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_gives_its_key_back() {
        let mut tasks: Tasks<&str, u32> = Tasks::default();
        tasks.spawn("fine", async { 7 });
        tasks.spawn("broken", async { panic!("a bug") });
        let mut done = Vec::new();
        let mut lost = Vec::new();
        while let Some(ended) = tasks.next().await {
            match ended {
                Ended::Done(v) => done.push(v),
                Ended::Lost { key, error } => {
                    assert!(error.is_panic());
                    lost.push(key);
                }
            }
        }
        assert_eq!(done, [7]);
        assert_eq!(lost, ["broken"]);
        assert_eq!(tasks.len(), 0);
        assert!(tasks.keys.is_empty());
    }
}
