//! The files of /configs, written into the created (not yet started)
//! container as one tar archive: the template dir first, then
//! `config_files` over it, then `.auth_token` at mode 0600. CRLF becomes LF
//! in .sh/.py/.md files; a path that would leave /configs is refused before
//! anything is sent.
//!
//! The archive is uploaded to /configs itself (a volume the engine mounts
//! for the upload, so a T1 container's read-only root is never written)
//! and names paths relative to it, with every parent directory as an entry
//! of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, UploadToContainerOptionsBuilder,
};

use crate::docker::DockerError;

use crate::model::{FilesSpec, is_configs_path, strip_crlf};

use super::{ActError, Executor};

const MAX_BYTES: u64 = crate::model::MAX_CONFIG_BYTES;
const ROOT: &str = "configs";
const TOKEN: &str = ".auth_token";

fn invalid(message: String) -> ActError {
    ActError::InvalidFiles { message }
}

/// A relative path that stays inside /configs (see `is_configs_path`).
fn check_path(path: &str) -> Result<(), ActError> {
    let escapes = !is_configs_path(path);
    if escapes {
        let shown: String = path.chars().take(120).collect();
        return Err(invalid(format!(
            "path {shown:?} is not a plain relative path inside /configs"
        )));
    }
    Ok(())
}

/// Regular files under `dir` (symlinks and special files are left out, so
/// nothing outside the template dir is read), by relative path.
fn read_template(
    dir: &Path,
    rel: &str,
    out: &mut BTreeMap<String, (Vec<u8>, u32)>,
    total: &mut u64,
) -> Result<(), ActError> {
    let io = |e: std::io::Error| invalid(format!("template_path {}: {e}", dir.display()));
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(invalid(format!(
                "template_path {} holds a name that is not UTF-8",
                dir.display()
            )));
        };
        let path = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let meta = entry.path().symlink_metadata().map_err(io)?;
        if meta.is_dir() {
            read_template(&entry.path(), &path, out, total)?;
        } else if meta.is_file() {
            *total += meta.len();
            if *total > MAX_BYTES {
                return Err(invalid(format!("more than {MAX_BYTES} bytes to write")));
            }
            let content = std::fs::read(entry.path()).map_err(io)?;
            let mode = if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0
            {
                0o755
            } else {
                0o644
            };
            out.insert(path.clone(), (strip_crlf(&path, &content), mode));
        }
    }
    Ok(())
}

/// The one archive for `files`. Reads the template dir: run it off the
/// async threads.
pub fn build_archive(files: &FilesSpec) -> Result<Vec<u8>, ActError> {
    let mut entries: BTreeMap<String, (Vec<u8>, u32)> = BTreeMap::new();
    let mut total = 0;
    if let Some(dir) = &files.template_path {
        read_template(dir, "", &mut entries, &mut total)?;
    }
    for (path, content) in &files.files {
        check_path(path)?;
        let content = content.expose().as_bytes().to_vec();
        total += content.len() as u64;
        entries.insert(path.clone(), (strip_crlf(path, &content), 0o644));
    }
    if let Some(token) = &files.auth_token {
        total += token.expose().len() as u64;
        entries.insert(TOKEN.into(), (token.expose().as_bytes().to_vec(), 0o600));
    }
    if total > MAX_BYTES {
        return Err(invalid(format!("more than {MAX_BYTES} bytes to write")));
    }

    let mut dirs = BTreeSet::new();
    for path in entries.keys() {
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.display().to_string());
            parent = p.parent();
        }
    }
    let mtime = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = |kind: tar::EntryType, size: u64, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h
    };
    let mut archive = tar::Builder::new(Vec::new());
    let io = |e: std::io::Error| invalid(format!("building the archive: {e}"));
    // BTreeSet order puts each directory before what it holds.
    for dir in &dirs {
        let mut h = header(tar::EntryType::Directory, 0, 0o755);
        archive
            .append_data(&mut h, format!("{dir}/"), std::io::empty())
            .map_err(io)?;
    }
    for (path, (content, mode)) in &entries {
        let mut h = header(tar::EntryType::Regular, content.len() as u64, *mode);
        archive
            .append_data(&mut h, path, content.as_slice())
            .map_err(io)?;
    }
    archive.into_inner().map_err(io)
}

impl Executor {
    /// Writes `files` into /configs of container `id` (one of this host's)
    /// as one archive. Writing the same files again gives the same result.
    /// Unless the files carry a config.yaml, /configs must then hold one
    /// (from the template or the configs volume): a container without it
    /// only crash-loops, so its start is refused with `ConfigMissing`.
    pub async fn write_files(&self, id: &str, files: &FilesSpec) -> Result<(), ActError> {
        let written = files
            .files
            .get("config.yaml")
            .is_some_and(|c| !c.expose().is_empty());
        let files = files.clone();
        let archive = tokio::task::spawn_blocking(move || build_archive(&files))
            .await
            .map_err(|e| invalid(format!("building the archive: {e}")))??;
        let info = self.owned_container(id).await?;
        let opts = UploadToContainerOptionsBuilder::new()
            .path(&format!("/{ROOT}"))
            .build();
        super::may_change("upload to container")?;
        self.docker
            .upload_to_container(id, Some(opts), bollard::body_full(archive.into()))
            .await
            .map_err(|e| super::container::container_error("upload to container", id, e.into()))?;
        if written || self.config_present(id).await? {
            return Ok(());
        }
        let volume = info
            .mounts
            .iter()
            .flatten()
            .find(|m| m.destination.as_deref() == Some(&format!("/{ROOT}")))
            .and_then(|m| m.name.clone())
            .unwrap_or_else(|| "(none mounted)".into());
        Err(ActError::ConfigMissing {
            container: info
                .name
                .as_deref()
                .unwrap_or(id)
                .trim_start_matches('/')
                .into(),
            volume,
        })
    }
}

impl Executor {
    /// Whether /configs of container `id` holds `config.yaml` (the probe
    /// behind `config_missing`). Reads only; a missing container is
    /// `Gone`, not "no config".
    pub async fn has_config(&self, id: &str) -> Result<bool, ActError> {
        self.inspect(id)
            .await
            .map_err(|e| super::container::container_error("inspect container", id, e))?;
        self.config_present(id).await
    }

    /// Whether `/configs/config.yaml` exists in container `id`.
    async fn config_present(&self, id: &str) -> Result<bool, ActError> {
        let opts = ContainerArchiveInfoOptionsBuilder::new()
            .path(&format!("/{ROOT}/config.yaml"))
            .build();
        match self.docker.get_container_archive_info(id, Some(opts)).await {
            Ok(_) => Ok(true),
            Err(e) => match DockerError::from(e) {
                DockerError::NotFound { .. } => Ok(false),
                other => Err(ActError::docker("stat in container", other)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Secret;

    fn listing(archive: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in tar::Archive::new(archive).entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mode = entry.header().mode().unwrap();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            out.push((path, mode, content));
        }
        out
    }

    #[test]
    fn the_archive_holds_directories_first_then_files_with_crlf_stripped_in_scripts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/run.sh"), "#!/bin/sh\r\necho hi\r\n").unwrap();
        std::fs::write(dir.path().join("data.txt"), "a\r\nb").unwrap();
        std::fs::write(dir.path().join("config.yaml"), "from: template").unwrap();
        let files = FilesSpec {
            template_path: Some(dir.path().to_path_buf()),
            files: BTreeMap::from([
                ("config.yaml".to_string(), Secret::new("from: row".into())),
                ("docs/a.md".to_string(), Secret::new("x\r\ny".into())),
            ]),
            auth_token: Some(Secret::new("tok".into())),
        };
        let list = listing(&build_archive(&files).unwrap());
        let names: Vec<&str> = list.iter().map(|(p, ..)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin/",
                "docs/",
                ".auth_token",
                "bin/run.sh",
                "config.yaml",
                "data.txt",
                "docs/a.md",
            ]
        );
        let get = |name: &str| list.iter().find(|(p, ..)| p == name).unwrap();
        assert_eq!(get("bin/run.sh").2, b"#!/bin/sh\necho hi\n");
        assert_eq!(get("data.txt").2, b"a\r\nb");
        assert_eq!(get("config.yaml").2, b"from: row");
        assert_eq!(get("docs/a.md").2, b"x\ny");
        assert_eq!(get(".auth_token").1, 0o600);
    }

    #[test]
    fn paths_that_leave_configs_are_refused() {
        for bad in [
            "../../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "a//b",
            "./a",
            "",
        ] {
            let files = FilesSpec {
                files: BTreeMap::from([(bad.to_string(), Secret::new("x".into()))]),
                ..FilesSpec::default()
            };
            let err = build_archive(&files).unwrap_err();
            assert!(matches!(err, ActError::InvalidFiles { .. }), "{bad}: {err}");
        }
    }
}
