//! Row → the exact container the Go provisioner would have made, or the
//! reason no safe container can be made.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::{
    ContainerSpec, FilesSpec, LABEL_HOST, LABEL_IMAGE_DIGEST, LABEL_MANAGED, LABEL_RESTART_EPOCH,
    LABEL_SESSION_EPOCH, LABEL_SPEC_HASH, LABEL_WORKSPACE, Material, Reason, Tier, VolumeSpec,
    WorkspaceAccess, WorkspaceRow,
};

use super::{Catalogue, Settings, hash, image, validate};

/// Why a row cannot make a safe container, and the human detail for
/// `last_error`. [`spec()`] judges `invalid_spec` and `tier_not_allowed`;
/// the pass adds `name_conflict` (a contested name) and `tier_not_allowed`
/// (a second T4); `config_missing` needs probes and is judged by the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSpec {
    pub reason: Reason,
    pub message: String,
}

impl InvalidSpec {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        InvalidSpec {
            reason,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Reason::InvalidSpec, message)
    }
}

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for InvalidSpec {}

/// The port the agent serves inside the container.
pub const AGENT_PORT: &str = "8000/tcp";
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The container `row` asks for. Pure: whether the row may hold its name
/// against other rows, and whether it is the host's one T4, are judged by
/// the pass, which sees every row.
pub fn spec(
    row: &WorkspaceRow,
    catalogue: &Catalogue,
    settings: &Settings,
) -> Result<ContainerSpec, InvalidSpec> {
    let tier = Tier::from_row(row.tier);
    if tier == Tier::T4 && !settings.allow_host_root_tier {
        return Err(InvalidSpec::new(
            Reason::TierNotAllowed,
            "tier 4 (host root) needs BERTH_ALLOW_HOST_ROOT_TIER=true",
        ));
    }
    let env = validate::env(row, settings)?;
    let (image, image_source, runtime) = image::choose(row, catalogue, settings)?;
    let name = row.id.container_name();

    let owner_labels = || {
        BTreeMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_WORKSPACE.to_string(), row.id.to_string()),
            (LABEL_HOST.to_string(), settings.host_id.clone()),
        ])
    };
    let mut volumes = vec![VolumeSpec {
        name: row.id.configs_volume(),
        labels: owner_labels(),
    }];
    let mut binds = vec![format!("{}:/configs", row.id.configs_volume())];

    let workspace_bind = match (row.workspace_access, row.workspace_dir.as_deref()) {
        (WorkspaceAccess::None, _) => None,
        (access, None | Some("")) => {
            return Err(InvalidSpec::invalid(format!(
                "workspace_access {access} needs workspace_dir"
            )));
        }
        (access, Some(dir)) => {
            let dir = validate::workspace_dir(dir, settings)?;
            let ro = if access == WorkspaceAccess::ReadOnly {
                ":ro"
            } else {
                ""
            };
            Some(format!("{}:/workspace{ro}", dir.display()))
        }
    };
    if tier != Tier::T1 {
        binds.push(workspace_bind.unwrap_or_else(|| {
            volumes.push(VolumeSpec {
                name: row.id.workspace_volume(),
                labels: owner_labels(),
            });
            format!("{}:/workspace", row.id.workspace_volume())
        }));
        if runtime.is_some_and(|r| r.session_volume) {
            let mut labels = owner_labels();
            labels.insert(LABEL_SESSION_EPOCH.into(), row.session_epoch.to_string());
            volumes.push(VolumeSpec {
                name: row.id.sessions_volume(),
                labels,
            });
            binds.push(format!(
                "{}:/root/.claude/sessions",
                row.id.sessions_volume()
            ));
        }
    }

    let (default_mb, default_shares) = tier.defaults();
    let memory_mb = settings.tiers.memory_mb[tier.index()].unwrap_or(default_mb);
    let shares = settings.tiers.cpu_shares[tier.index()].unwrap_or(default_shares);
    let mut material = Material {
        image: image.as_str().to_string(),
        env,
        binds,
        memory: i64::try_from(memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX),
        nano_cpus: i64::try_from(u128::from(shares) * 1_000_000_000 / 1024).unwrap_or(i64::MAX),
        network_mode: settings.network.clone(),
        network_aliases: vec![name.clone()],
        ports: vec![format!("127.0.0.1::{AGENT_PORT}")],
        ..Material::default()
    };
    let mut exposed_ports = vec![AGENT_PORT.to_string()];
    let mut fixed_url = None;
    match tier {
        Tier::T1 => {
            material.readonly_rootfs = true;
            material
                .tmpfs
                .insert("/tmp".into(), "rw,noexec,nosuid,size=64m".into());
        }
        Tier::T2 => {}
        Tier::T3 | Tier::T4 => {
            material.privileged = true;
            material.pid_mode = "host".into();
        }
    }
    if tier == Tier::T4 {
        material.network_mode = "host".into();
        material.network_aliases.clear();
        material.ports.clear();
        material
            .binds
            .push(format!("{DOCKER_SOCKET}:{DOCKER_SOCKET}"));
        exposed_ports.clear();
        fixed_url = Some("http://127.0.0.1:8000".to_string());
    }

    let files = FilesSpec {
        template_path: match row.template_path.as_deref() {
            None | Some("") => None,
            Some(p) => Some(validate::host_path("template_path", p)?),
        },
        files: validate::config_files(row.config_files.expose())?,
        auth_token: validate::auth_token(row.auth_token.as_ref())?,
    };

    let spec_hash = hash::spec_hash(&material);
    let mut labels = owner_labels();
    labels.insert(LABEL_SPEC_HASH.into(), spec_hash.clone());
    labels.insert(LABEL_RESTART_EPOCH.into(), row.restart_epoch.to_string());
    if let Some(digest) = image.digest() {
        labels.insert(LABEL_IMAGE_DIGEST.into(), digest.to_string());
    }

    Ok(ContainerSpec {
        workspace: row.id,
        name,
        tier,
        image,
        image_source,
        platform: settings.platform.clone(),
        labels,
        material,
        exposed_ports,
        restart_policy: "unless-stopped".into(),
        log_driver: "json-file".into(),
        log_opts: BTreeMap::from([
            ("max-size".to_string(), "10m".to_string()),
            ("max-file".to_string(), "3".to_string()),
        ]),
        volumes,
        files,
        fixed_url,
        hash: spec_hash,
        other_dirs: Vec::new(),
    })
}
