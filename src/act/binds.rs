//! Host directories bound into a container lie under the allowed roots as
//! the host resolves them, not only by their text.
//!
//! The planner accepts a row's `workspace_dir` when its text lies under
//! `BERTH_WORKSPACE_ROOTS`. A workspace with read-write access can make a
//! symlink in its own directory (`<root>/a/x -> /`), and a row naming
//! `<root>/a/x` would then bind whatever the link points at. So before a
//! create the executor resolves each host path the container binds, symlinks
//! followed, and refuses one that resolves outside every root (resolved the
//! same way) or does not resolve at all. Docker resolves the path again at
//! each start; the check holds for what the create is given.

use std::io;
use std::path::{Path, PathBuf};

use super::ActError;
use crate::model::OtherDir;

/// The docker socket, which the planner binds into tier-4 containers
/// itself; no row names it.
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Every bind of `binds` (`source:target[:options]`) whose source is a host
/// path, other than tier 4's docker socket, resolves under one of `roots`.
/// Nor does one nest, resolved, with an older workspace's directory of
/// `others` (resolved too, as far as it exists): inside one that is
/// read-write, or holding one while itself read-write.
pub(super) async fn check_binds(
    binds: &[String],
    roots: &[PathBuf],
    others: &[OtherDir],
) -> Result<(), ActError> {
    let host_binds: Vec<(&str, &str, bool)> = binds
        .iter()
        .filter_map(|bind| {
            let mut parts = bind.splitn(3, ':');
            let source = parts.next()?;
            let target = parts.next().unwrap_or_default();
            let read_write = !parts
                .next()
                .unwrap_or_default()
                .split(',')
                .any(|o| o == "ro");
            let socket = source == DOCKER_SOCKET && target == DOCKER_SOCKET;
            (source.starts_with('/') && !socket).then_some((source, target, read_write))
        })
        .collect();
    if host_binds.is_empty() {
        return Ok(());
    }
    // A root that does not resolve holds nothing a bind could resolve to.
    let mut resolved_roots = Vec::with_capacity(roots.len());
    for root in roots {
        if let Ok(resolved) = tokio::fs::canonicalize(root).await {
            resolved_roots.push(resolved);
        }
    }
    let mut resolved_others = Vec::with_capacity(others.len());
    for other in others {
        if let Some(resolved) = resolve_existing_part(Path::new(&other.dir)).await {
            resolved_others.push((other, resolved));
        }
    }
    for (source, target, read_write) in host_binds {
        let refuse = |detail: String| ActError::InvalidBind {
            dir: source.to_string(),
            target: target.to_string(),
            detail,
        };
        let resolved = tokio::fs::canonicalize(source)
            .await
            .map_err(|e| refuse(unresolved(&e)))?;
        if !resolved_roots.iter().any(|root| resolved.starts_with(root)) {
            return Err(refuse(outside(&resolved)));
        }
        // A file bound over /workspace would start, and serve no
        // workspace: the row names a directory or nothing.
        if !tokio::fs::metadata(&resolved)
            .await
            .is_ok_and(|m| m.is_dir())
        {
            return Err(refuse(format!(
                "resolves to {:?}, which is not a directory",
                resolved.display().to_string()
            )));
        }
        for (other, theirs) in &resolved_others {
            if *theirs == resolved {
                continue;
            }
            if other.read_write && resolved.starts_with(theirs) {
                return Err(refuse(format!(
                    "resolves to {:?}, inside {:?} (resolved), the read-write workspace_dir of the older workspace {}",
                    resolved.display().to_string(),
                    theirs.display().to_string(),
                    other.workspace
                )));
            }
            if read_write && theirs.starts_with(&resolved) {
                return Err(refuse(format!(
                    "resolves to {:?} (read-write), which holds {:?} (resolved), the workspace_dir of the older workspace {}",
                    resolved.display().to_string(),
                    theirs.display().to_string(),
                    other.workspace
                )));
            }
        }
    }
    Ok(())
}

/// `path` with its longest existing prefix resolved (symlinks followed)
/// and the rest appended as written: where a directory not made yet would
/// be. An older workspace's directory that does not exist yet is still
/// its own: a younger read-write one must not hold the place, or it could
/// make that directory itself and later swap it for a symlink. `None`
/// when nothing of it resolves (not even `/`).
async fn resolve_existing_part(path: &Path) -> Option<PathBuf> {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(resolved) = tokio::fs::canonicalize(at).await {
            return Some(rest.iter().rev().fold(resolved, |p, c| p.join(c)));
        }
        rest.push(at.file_name()?.to_os_string());
        at = at.parent()?;
    }
}

fn unresolved(e: &io::Error) -> String {
    format!("cannot be resolved on the host ({e}); it must exist under BERTH_WORKSPACE_ROOTS")
}

fn outside(resolved: &Path) -> String {
    format!(
        "resolves to {:?}, which is outside BERTH_WORKSPACE_ROOTS",
        resolved.display().to_string()
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::model::Reason;

    fn binds(dir: &Path, target: &str) -> Vec<String> {
        vec![
            "ws-0f8fad5bd9cb-configs:/configs".to_string(),
            format!("{}:{target}", dir.display()),
        ]
    }

    #[tokio::test]
    async fn a_symlink_out_of_the_root_is_refused_naming_where_it_leads() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let link = root.path().join("x");
        symlink(elsewhere.path(), &link).unwrap();
        let roots = [root.path().to_path_buf()];
        let err = check_binds(&binds(&link, "/workspace"), &roots, &[])
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(Reason::InvalidSpec));
        assert_eq!(err.kind(), "invalid_spec");
        let text = err.to_string();
        let target = elsewhere.path().canonicalize().unwrap();
        assert!(text.contains(&link.display().to_string()), "{text}");
        assert!(text.contains(&target.display().to_string()), "{text}");
        assert!(text.contains("outside BERTH_WORKSPACE_ROOTS"), "{text}");

        // A link deeper in the path leads out the same way.
        let below = link.join("sub");
        std::fs::create_dir(elsewhere.path().join("sub")).unwrap();
        let err = check_binds(&binds(&below, "/workspace:ro"), &roots, &[]).await;
        assert!(matches!(err, Err(ActError::InvalidBind { .. })), "{err:?}");
    }

    #[tokio::test]
    async fn a_directory_or_a_link_staying_inside_the_root_is_accepted() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a");
        std::fs::create_dir(&dir).unwrap();
        let inside = root.path().join("b");
        symlink(&dir, &inside).unwrap();
        let roots = [root.path().to_path_buf()];
        check_binds(&binds(&dir, "/workspace"), &roots, &[])
            .await
            .unwrap();
        check_binds(&binds(&inside, "/workspace:ro"), &roots, &[])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_root_reached_through_a_symlink_holds_its_own_directories() {
        let real = tempfile::tempdir().unwrap();
        let links = tempfile::tempdir().unwrap();
        let root = links.path().join("root");
        symlink(real.path(), &root).unwrap();
        let dir = root.join("a");
        std::fs::create_dir(&dir).unwrap();
        check_binds(&binds(&dir, "/workspace"), &[root], &[])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_file_or_a_link_to_one_is_refused_as_no_directory() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("afile");
        std::fs::write(&file, b"x").unwrap();
        let link = root.path().join("tofile");
        symlink(&file, &link).unwrap();
        let roots = [root.path().to_path_buf()];
        for source in [&file, &link] {
            let err = check_binds(&binds(source, "/workspace"), &roots, &[])
                .await
                .unwrap_err();
            assert_eq!(err.reason(), Some(Reason::InvalidSpec));
            assert!(err.to_string().contains("is not a directory"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_missing_directory_or_no_roots_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("missing");
        let roots = [root.path().to_path_buf()];
        let err = check_binds(&binds(&missing, "/workspace"), &roots, &[])
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("cannot be resolved"), "{text}");
        assert_eq!(err.reason(), Some(Reason::InvalidSpec));

        let dir = root.path().join("a");
        std::fs::create_dir(&dir).unwrap();
        let err = check_binds(&binds(&dir, "/workspace"), &[], &[]).await;
        assert!(matches!(err, Err(ActError::InvalidBind { .. })), "{err:?}");
    }

    #[tokio::test]
    async fn a_link_into_an_older_workspaces_writable_directory_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let theirs = root.path().join("ok");
        std::fs::create_dir_all(theirs.join("sub")).unwrap();
        let link = root.path().join("sublink");
        symlink(theirs.join("sub"), &link).unwrap();
        let roots = [root.path().to_path_buf()];
        let older =
            crate::model::WorkspaceId("0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap());
        let other = |read_write| OtherDir {
            dir: theirs.display().to_string(),
            read_write,
            workspace: older,
        };
        // By its text the link lies beside the older directory; resolved,
        // inside it.
        for target in ["/workspace", "/workspace:ro"] {
            let err = check_binds(&binds(&link, target), &roots, &[other(true)])
                .await
                .unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("read-write workspace_dir of the older workspace"),
                "{text}"
            );
            assert!(text.contains(&older.to_string()), "{text}");
        }
        // Inside a read-only one is no hazard; the same directory is
        // shared, not nested.
        check_binds(&binds(&link, "/workspace:ro"), &roots, &[other(false)])
            .await
            .unwrap();
        check_binds(&binds(&theirs, "/workspace"), &roots, &[other(true)])
            .await
            .unwrap();
        // An older directory not made yet keeps its place all the same.
        let later = OtherDir {
            dir: theirs.join("not-yet").display().to_string(),
            read_write: false,
            workspace: older,
        };
        let err = check_binds(&binds(&theirs, "/workspace"), &roots, &[later])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not-yet"), "{err}");
        // A read-write directory that holds the older one, through a link.
        let up = root.path().join("up");
        symlink(root.path(), &up).unwrap();
        let err = check_binds(&binds(&up, "/workspace"), &roots, &[other(false)])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("which holds"), "{err}");
        check_binds(&binds(&up, "/workspace:ro"), &roots, &[other(false)])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn volumes_and_the_tier_4_docker_socket_are_not_host_directories() {
        let binds = [
            "ws-0f8fad5bd9cb-configs:/configs".to_string(),
            "ws-0f8fad5b-d9cb-469f-a165-70867728950e-workspace:/workspace".to_string(),
            format!("{DOCKER_SOCKET}:{DOCKER_SOCKET}"),
        ];
        check_binds(&binds, &[], &[]).await.unwrap();
    }
}
