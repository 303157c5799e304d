//! The container berth wants for a workspace, as the planner builds it and
//! the executor creates it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use super::{ImageRef, Platform, Secret, WorkspaceId};

/// The isolation tier. A row's tier 1..=4 names one; anything else is T2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Sandboxed: read-only rootfs, tmpfs /tmp, no /workspace, no sessions.
    T1,
    /// Standard: memory and CPU caps.
    T2,
    /// Privileged, host PID.
    T3,
    /// Host root: privileged, host PID, host network, the docker socket.
    T4,
}

impl Tier {
    pub fn from_row(tier: i32) -> Tier {
        match tier {
            1 => Tier::T1,
            3 => Tier::T3,
            4 => Tier::T4,
            _ => Tier::T2,
        }
    }

    /// 0-based index into `TierOverrides`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The tier's own memory limit (MiB) and CPU shares, where the
    /// operator sets no `TIERn_*`; 0 is no limit.
    pub fn defaults(self) -> (u64, u64) {
        match self {
            Tier::T1 => (0, 0),
            Tier::T2 => (512, 1024),
            Tier::T3 => (2048, 2048),
            Tier::T4 => (4096, 4096),
        }
    }

    pub const ALL: [Tier; 4] = [Tier::T1, Tier::T2, Tier::T3, Tier::T4];
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{}", self.index() + 1)
    }
}

/// One `KEY=value` of the container's environment; the value is a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvVar {
    pub key: String,
    pub value: Secret<String>,
}

impl EnvVar {
    pub fn new(key: &str, value: &str) -> Self {
        EnvVar {
            key: key.into(),
            value: Secret::new(value.into()),
        }
    }

    /// `KEY=value`, as Docker takes it. Only for the create call and tests.
    pub fn to_docker(&self) -> String {
        format!("{}={}", self.key, self.value.expose())
    }
}

/// The fields whose change means a different container (the spec hash's
/// whitelist). The observer fills the same struct from inspect when it
/// must compare across hash versions; its `env` then leaves out the
/// image's own `ENV` entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Material {
    /// The reference text; a pinned reference carries its digest.
    pub image: String,
    pub env: Vec<EnvVar>,
    /// Docker `Binds`, in mount order.
    pub binds: Vec<String>,
    pub tmpfs: BTreeMap<String, String>,
    pub readonly_rootfs: bool,
    /// Bytes; 0 = no limit.
    pub memory: i64,
    /// 0 = no limit.
    pub nano_cpus: i64,
    pub privileged: bool,
    /// `""` or `"host"`.
    pub pid_mode: String,
    /// The network joined, or `"host"`.
    pub network_mode: String,
    pub network_aliases: Vec<String>,
    /// `host_ip:host_port:container_port/proto`; host port empty = ephemeral.
    pub ports: Vec<String>,
}

/// Where the image reference came from (DESIGN §1.3 precedence).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ImageSource {
    /// The row's `image` column.
    Explicit,
    /// `runtime_image_pins` for this ring (the row's, or `stable`).
    Pinned { ring: String },
    /// The moving `:latest` tag of the registry; pulled when missing.
    Tag,
    /// `WORKSPACE_IMAGE_LOCAL_OVERRIDE`: the tag as the local store has it,
    /// never pulled.
    LocalOnly,
    /// Local-build mode: built from the runtime's template repository.
    LocalBuild { runtime: String },
}

impl ImageSource {
    /// Whether `image`, from this source, follows a moving reference that
    /// a refresh re-resolves: the runtime's tag, a row's explicit image
    /// named by a tag, or a local build.
    pub fn follows(&self, image: &super::ImageRef) -> bool {
        match self {
            ImageSource::Tag | ImageSource::LocalBuild { .. } => true,
            ImageSource::Explicit => image.is_moving(),
            ImageSource::Pinned { .. } | ImageSource::LocalOnly => false,
        }
    }
}

/// A named volume the container mounts, with the labels it is created
/// with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// What is written into /configs of the created container before it
/// starts, as one archive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilesSpec {
    /// A host directory copied first (CRLF stripped from .sh/.py/.md by
    /// the executor as it reads them).
    pub template_path: Option<PathBuf>,
    /// Relative path (checked to stay inside /configs) → content, CRLF
    /// already stripped where the extension asks for it.
    pub files: BTreeMap<String, Secret<String>>,
    /// Written to `.auth_token`, mode 0600.
    pub auth_token: Option<Secret<String>>,
}

impl FilesSpec {
    /// Nothing to write: no template, no file, no token.
    pub fn is_empty(&self) -> bool {
        self.template_path.is_none() && self.files.is_empty() && self.auth_token.is_none()
    }
}

/// The host directory of an older workspace, which a create checks its
/// own binds against once symlinks are followed: none may lie inside
/// another's read-write directory, nor a read-write one hold another's.
/// The planner compares the rows' text; a symlink under the roots can
/// make two directories nest that do not by their text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherDir {
    pub dir: String,
    pub read_write: bool,
    pub workspace: super::WorkspaceId,
}

/// The desired container for one workspace. `Debug` shows no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSpec {
    pub workspace: WorkspaceId,
    /// `ws-<id12>`.
    pub name: String,
    pub tier: Tier,
    pub image: ImageRef,
    pub image_source: ImageSource,
    pub platform: Option<Platform>,
    /// Managed, workspace, host, spec hash, restart epoch; image digest and
    /// id when already known (the executor sets them from the image it
    /// ensured).
    pub labels: BTreeMap<String, String>,
    pub material: Material,
    /// `8000/tcp`, except in T4 (host network).
    pub exposed_ports: Vec<String>,
    pub restart_policy: String,
    pub log_driver: String,
    pub log_opts: BTreeMap<String, String>,
    /// Volumes to ensure before create, with their labels.
    pub volumes: Vec<VolumeSpec>,
    pub files: FilesSpec,
    /// The URL when it does not depend on a published port (T4).
    pub fixed_url: Option<String>,
    /// `<version>:<hex>`, also in the labels.
    pub hash: String,
    /// The older workspaces' directories its binds may not nest with (see
    /// [`OtherDir`]); not part of the spec's material.
    pub other_dirs: Vec<OtherDir>,
}

impl ContainerSpec {
    /// What the image is known to be now (from the digest and id labels
    /// the planner set from the controller's image knowledge).
    pub fn known_image(&self) -> super::ResolvedImage {
        super::ResolvedImage {
            digest: self
                .labels
                .get(super::LABEL_IMAGE_DIGEST)
                .and_then(|d| super::Digest::parse(d).ok()),
            id: self.labels.get(super::LABEL_IMAGE_ID).cloned(),
        }
    }
}

/// The most the template dir, `config_files` and the token may hold
/// together, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024 * 1024;

/// Whether `path` is a plain relative path inside /configs: not empty, no
/// leading `/`, no empty, `.` or `..` component, no control character.
pub fn is_configs_path(path: &str) -> bool {
    !(path.is_empty()
        || path.starts_with('/')
        || path.chars().any(char::is_control)
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".."))
}

/// Scripts and docs (`.sh`, `.py`, `.md`) lose the CR of each CRLF (a CR
/// in a shebang breaks it); other files are kept as they are.
pub fn strip_crlf(path: &str, content: &[u8]) -> Vec<u8> {
    if ![".sh", ".py", ".md"].iter().any(|ext| path.ends_with(ext)) {
        return content.to_vec();
    }
    let mut out = Vec::with_capacity(content.len());
    let mut bytes = content.iter().peekable();
    while let Some(&b) = bytes.next() {
        if b == b'\r' && bytes.peek() == Some(&&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}
