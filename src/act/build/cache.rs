//! The checked-out sources under the cache dir: `<cache>/<runtime>/<commit>/`,
//! private to berth's user, complete whenever present (a clone is made
//! beside its place and renamed into it), and only the newest kept.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::super::Executor;
use super::git::Remote;

impl Executor {
    /// The source of `head` under `runtime_dir`: kept from before, or a
    /// fresh shallow clone (made beside it and renamed into place, so a
    /// kept directory is always complete). The commit is the clone's own,
    /// which is newer than `head` when HEAD moved meanwhile. A clone taking
    /// longer than `timeout` fails.
    pub(super) async fn checkout(
        &self,
        remote: &Remote,
        runtime_dir: &Path,
        head: &str,
        timeout: Duration,
    ) -> Result<(String, PathBuf), String> {
        let kept = runtime_dir.join(head);
        if kept.is_dir() {
            return Ok((head.to_string(), kept));
        }
        create_private_dir(runtime_dir)
            .await
            .map_err(|e| format!("cache dir {}: {e}", runtime_dir.display()))?;
        let scratch = runtime_dir.join(format!(".clone-{:016x}", fastrand::u64(..)));
        self.builds.clones.fetch_add(1, Ordering::Relaxed);
        tracing::info!(repository = %remote.shown(), commit = &head[..12], "local build: cloning");
        let cloned = remote.clone_into(&scratch, timeout).await;
        let commit = match cloned {
            Ok(commit) => commit,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&scratch).await;
                return Err(e.to_string());
            }
        };
        let target = runtime_dir.join(&commit);
        if target.is_dir() {
            let _ = tokio::fs::remove_dir_all(&scratch).await;
        } else if let Err(e) = tokio::fs::rename(&scratch, &target).await {
            let _ = tokio::fs::remove_dir_all(&scratch).await;
            return Err(format!("cache dir {}: {e}", target.display()));
        }
        Ok((commit, target))
    }
}

/// Creates `dir` and its parents, readable by this user only (sources
/// may be private).
async fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Removes every source kept for the runtime but `commit`'s (and clones
/// left half-made by an interrupted berth).
pub(super) async fn prune_contexts(runtime_dir: &Path, commit: &str) {
    let Ok(mut entries) = tokio::fs::read_dir(runtime_dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        if entry.file_name() != commit {
            let _ = tokio::fs::remove_dir_all(entry.path()).await;
        }
    }
}
