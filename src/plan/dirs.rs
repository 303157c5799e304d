//! Host directories rows mount: no row's directory lies inside another
//! row's writable one (see [`dir_refusals`]).

use std::collections::BTreeMap;

use crate::model::{DesiredState, OtherDir, Tier, WorkspaceId, WorkspaceRow};

use super::Settings;

/// A host directory a row mounts.
struct Mount<'s> {
    dir: &'s std::path::Path,
    row: &'s WorkspaceRow,
}

impl Mount<'_> {
    fn other(&self) -> OtherDir {
        OtherDir {
            dir: self.dir.display().to_string(),
            read_write: self.row.workspace_access == crate::model::WorkspaceAccess::ReadWrite,
            workspace: self.row.id,
        }
    }

    /// Whether `inner` lies inside this mount and this one is writable.
    fn holds(&self, inner: &Mount) -> bool {
        self.row.workspace_access == crate::model::WorkspaceAccess::ReadWrite
            && inner.dir != self.dir
            && inner.dir.starts_with(self.dir)
    }
}

/// No directory lies inside another row's writable one (that workspace
/// could put a symlink there, which the engine follows at every start,
/// past the check at create). Rows keep their directories oldest first: a
/// row whose directory is nested with one an older row keeps (either way
/// round) is refused, so a row added later never takes an older one's
/// directory, and a row with an invalid directory (refused on its own)
/// stands in no one's way. The text is all the planner sees; each kept
/// row's create gets the older kept rows' directories, to check again
/// once symlinks are followed.
pub(super) fn dir_refusals(
    rows: &[&WorkspaceRow],
    settings: &Settings,
) -> (
    BTreeMap<WorkspaceId, String>,
    BTreeMap<WorkspaceId, Vec<OtherDir>>,
) {
    let mut mounts: Vec<Mount> = rows
        .iter()
        .filter(|r| r.desired_state != DesiredState::Removed)
        .filter(|r| r.workspace_access != crate::model::WorkspaceAccess::None)
        // A tier-1 container binds no host directory.
        .filter(|r| Tier::from_row(r.tier) != Tier::T1)
        .filter_map(|r| {
            let dir = r.workspace_dir.as_deref()?;
            super::validate::workspace_dir(dir, settings).ok()?;
            Some(Mount {
                dir: std::path::Path::new(dir),
                row: r,
            })
        })
        .collect();
    mounts.sort_by_key(|m| (m.row.created_at, m.row.id));
    let mut kept: Vec<&Mount> = Vec::new();
    let mut refused = BTreeMap::new();
    let mut older = BTreeMap::new();
    for m in &mounts {
        let why = kept.iter().find_map(|k| {
            if k.holds(m) {
                Some(format!(
                    "workspace_dir {} lies inside {}, the read-write workspace_dir of the older workspace {}",
                    m.dir.display(),
                    k.dir.display(),
                    k.row.id
                ))
            } else if m.holds(k) {
                Some(format!(
                    "workspace_dir {} (read-write) holds {}, the workspace_dir of the older workspace {}",
                    m.dir.display(),
                    k.dir.display(),
                    k.row.id
                ))
            } else {
                None
            }
        });
        match why {
            Some(why) => {
                refused.insert(m.row.id, why);
            }
            None => {
                if !kept.is_empty() {
                    older.insert(m.row.id, kept.iter().map(|k| k.other()).collect());
                }
                kept.push(m);
            }
        }
    }
    (refused, older)
}
