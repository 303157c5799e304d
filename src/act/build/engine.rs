//! The build itself, through the Engine API: the checked-out repository as
//! a tar context (its `.git` left out, symlinks kept as links), the
//! Dockerfile at its root, labels of berth's own, no build arguments, the
//! configured platform, a no-progress and a total deadline, and the last
//! lines of the build log kept for the error.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::Duration;

use bollard::body_full;
use bollard::query_parameters::{BuildImageOptions, BuildImageOptionsBuilder};
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use crate::docker::DockerError;
use crate::model::Platform;

use super::super::{ActError, Executor};
use super::ignore::Ignore;

/// How many lines of the build log an error quotes.
const TAIL_LINES: usize = 8;
/// The longest log line quoted, in characters.
const LINE_CHARS: usize = 240;

/// `sha256:<hex>` of the Dockerfile's bytes.
pub fn dockerfile_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::from("sha256:");
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The directory as a tar archive, as the docker CLI would send it: the
/// `.git` at its root and what `.dockerignore` excludes left out (the
/// Dockerfile and `.dockerignore` themselves always sent), symlinks kept
/// as links (never followed out of the repository), and headers without
/// owner or times, so equal trees give equal archives.
pub fn context_tar(dir: &Path) -> std::io::Result<Vec<u8>> {
    let ignore = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(text) => Ignore::parse(&text),
        Err(_) => Ignore::default(),
    };
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Deterministic);
    add_dir(&mut tar, dir, "", &ignore)?;
    tar.into_inner()
}

fn add_dir(
    tar: &mut tar::Builder<Vec<u8>>,
    dir: &Path,
    prefix: &str,
    ignore: &Ignore,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        if rel == ".git" {
            continue;
        }
        let always = rel == "Dockerfile" || rel == ".dockerignore";
        let excluded = !always && ignore.excluded(&rel);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if excluded && !ignore.has_exceptions() {
                continue;
            }
            if !excluded {
                tar.append_dir(&rel, entry.path())?;
            }
            add_dir(tar, &entry.path(), &format!("{rel}/"), ignore)?;
        } else if !excluded {
            tar.append_path_with_name(entry.path(), &rel)?;
        }
    }
    Ok(())
}

/// What one build is given.
#[derive(Debug)]
pub struct BuildRequest<'a> {
    /// `<repository>:<tag>` the image gets.
    pub tag: &'a str,
    pub labels: HashMap<String, String>,
    pub platform: Option<&'a Platform>,
    pub context: Vec<u8>,
    /// No build output for this long fails the build.
    pub progress_timeout: Duration,
    /// When the build fails unless done: `timeout` after the checkout (a
    /// clone, or the kept source) began.
    pub deadline: Instant,
    /// `BERTH_BUILD_TIMEOUT`, for the message.
    pub timeout: Duration,
}

/// The last lines of the build log.
#[derive(Debug, Default)]
struct Tail(VecDeque<String>);

impl Tail {
    fn push(&mut self, text: &str) {
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if self.0.len() == TAIL_LINES {
                self.0.pop_front();
            }
            self.0.push_back(line.chars().take(LINE_CHARS).collect());
        }
    }

    fn quoted(&self) -> String {
        if self.0.is_empty() {
            return "(no build output)".into();
        }
        let lines: Vec<&str> = self.0.iter().map(String::as_str).collect();
        format!("last lines: {}", lines.join(" | "))
    }
}

/// The build's query: the Dockerfile at the context's root, berth's
/// labels, the platform when one is configured, intermediate containers
/// removed, and no build arguments.
fn options(request: &BuildRequest<'_>) -> BuildImageOptions {
    let mut opts = BuildImageOptionsBuilder::new()
        .dockerfile("Dockerfile")
        .t(request.tag)
        .rm(true)
        .forcerm(true)
        .labels(&request.labels);
    if let Some(p) = request.platform {
        opts = opts.platform(&p.0);
    }
    opts.build()
}

impl Executor {
    /// Builds `request` into the local image store. A step that fails, a
    /// stream with no message for the request's progress timeout, or a
    /// build past its deadline is a `BuildFailed` quoting the log's last
    /// lines; dropping the stream ends the daemon's build.
    pub(super) async fn run_build(&self, request: BuildRequest<'_>) -> Result<(), ActError> {
        let opts = options(&request);
        let progress = request.progress_timeout;
        let (deadline, total) = (request.deadline, request.timeout);
        let mut stream =
            self.docker
                .build_image(opts, None, Some(body_full(request.context.into())));
        let failed = |message: String| ActError::BuildFailed {
            image: request.tag.to_string(),
            message,
        };
        let mut tail = Tail::default();
        let drain = async {
            loop {
                match tokio::time::timeout(progress, stream.next()).await {
                    Err(_) => {
                        let after = humantime::format_duration(progress);
                        return Err(failed(format!(
                            "no build output for {after}; {}",
                            tail.quoted()
                        )));
                    }
                    Ok(None) => return Ok(()),
                    Ok(Some(Ok(info))) => {
                        tail.push(info.stream.as_deref().unwrap_or_default());
                        tail.push(info.status.as_deref().unwrap_or_default());
                    }
                    Ok(Some(Err(e))) => {
                        let error = DockerError::from(e);
                        if error.is_transient() {
                            return Err(ActError::docker("build image", error));
                        }
                        return Err(failed(format!("{error}; {}", tail.quoted())));
                    }
                }
            }
        };
        match tokio::time::timeout_at(deadline, drain).await {
            Ok(result) => result,
            Err(_) => {
                let after = humantime::format_duration(total);
                Err(failed(format!(
                    "the clone and build took longer than {after}; {}",
                    tail.quoted()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_is_what_the_docker_cli_would_send() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".git/objects")).unwrap();
        std::fs::write(dir.path().join(".git/config"), "secret").unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::create_dir_all(dir.path().join("app/.git")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        std::fs::create_dir_all(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/keep.txt"), "k").unwrap();
        std::fs::write(dir.path().join("docs/drop.txt"), "d").unwrap();
        std::fs::write(dir.path().join("notes.md"), "n").unwrap();
        std::fs::write(
            dir.path().join(".dockerignore"),
            "*.md\ndocs\n!docs/keep.txt\nDockerfile\n",
        )
        .unwrap();
        let bytes = context_tar(dir.path()).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            if path == "link" {
                assert!(entry.header().entry_type().is_symlink());
            }
            names.push(path);
        }
        assert!(names.contains(&"Dockerfile".to_string()), "{names:?}");
        assert!(names.iter().any(|n| n.starts_with("app")), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with(".git/")), "{names:?}");
        assert!(!names.iter().any(|n| n == ".git"), "{names:?}");
        assert!(names.contains(&".dockerignore".to_string()), "{names:?}");
        assert!(names.contains(&"docs/keep.txt".to_string()), "{names:?}");
        assert!(
            !names
                .iter()
                .any(|n| n == "docs/drop.txt" || n == "notes.md"),
            "{names:?}"
        );
        assert_eq!(bytes, context_tar(dir.path()).unwrap(), "deterministic");
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let mut tail = Tail::default();
        assert_eq!(tail.quoted(), "(no build output)");
        for i in 0..20 {
            tail.push(&format!("step {i}\n\n"));
        }
        let quoted = tail.quoted();
        assert!(quoted.starts_with("last lines: step 12 | "), "{quoted}");
        assert!(quoted.ends_with("step 19"), "{quoted}");
    }

    #[test]
    fn the_build_gets_the_platform_and_berths_labels_and_no_build_arguments() {
        let platform = Platform("linux/amd64".into());
        let request = BuildRequest {
            tag: "molecule-local/workspace-template-codex:0123456789ab",
            labels: HashMap::from([("berth.build.runtime".into(), "codex".into())]),
            platform: Some(&platform),
            context: Vec::new(),
            progress_timeout: Duration::from_secs(1),
            deadline: Instant::now(),
            timeout: Duration::from_secs(1),
        };
        let opts = options(&request);
        assert_eq!(opts.platform, "linux/amd64");
        assert_eq!(opts.dockerfile, "Dockerfile");
        assert_eq!(opts.t.as_deref(), Some(request.tag));
        assert_eq!(opts.labels, Some(request.labels.clone()));
        assert_eq!(opts.buildargs, None);
        assert_eq!(opts.pull, None, "the build never asks for a fresh base");
        let none = options(&BuildRequest {
            platform: None,
            ..request
        });
        assert_eq!(none.platform, "");
    }

    #[test]
    fn the_dockerfile_hash_is_sha256_hex() {
        assert_eq!(
            dockerfile_hash(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
