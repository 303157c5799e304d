//! The one place flags and environment are read. Configuration is parsed
//! once at start; every bad value is reported together.
//!
//! Each setting has an environment variable and a flag of the same name
//! (`BERTH_HOST_ID` ↔ `--host-id`, `TIER2_MEMORY_MB` ↔ `--tier2-memory-mb`);
//! a flag wins over the environment. An empty environment value counts as
//! unset, except where the Go provisioner gave "set but empty" a meaning
//! (`MOLECULE_IMAGE_PLATFORM`).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::{DeleteGuard, Platform, Secret, TierOverrides};

mod mask;
mod parse;
mod resolve;
mod settings;
mod values;

use mask::mask_url;
use parse::parse;
use resolve::Resolver;
pub use settings::{SETTINGS, Setting, flag_name};
pub use values::host_id;

/// The platform's default template repository prefix for local-build mode.
pub const DEFAULT_TEMPLATE_REPO_PREFIX: &str =
    "https://git.moleculesai.app/molecule-ai/molecule-ai-workspace-template-";

/// The effective configuration. Values in it are valid.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: SecretUrl,
    pub docker_host: Option<String>,
    /// The docker CLI config file (registry auths, credential helpers):
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub docker_config_file: Option<PathBuf>,
    pub host_id: String,
    pub listen: SocketAddr,
    pub concurrency: usize,
    pub resync_interval: Duration,
    pub orphan_grace: Duration,
    pub delete_guard: DeleteGuard,
    pub provision_timeout: Duration,
    pub ready_min_uptime: Duration,
    pub crash_backoff_initial: Duration,
    pub crash_backoff_max: Duration,
    pub crash_loop_restarts: u32,
    pub stop_timeout: Duration,
    pub shutdown_grace: Duration,
    pub pull_progress_timeout: Duration,
    pub pull_timeout: Duration,
    /// Local builds: a HEAD check with no answer, or an engine build with
    /// no output, for this long fails.
    pub build_progress_timeout: Duration,
    /// Local builds: the most the clone and the engine build of one commit
    /// may take together.
    pub build_timeout: Duration,
    /// Moving-tag re-resolution interval; `None` is off.
    pub tag_refresh: Option<Duration>,
    pub rollout: Rollout,
    pub pin_debounce: Duration,
    pub lease_ttl: Duration,
    pub network: String,
    pub workspace_roots: Vec<PathBuf>,
    pub allow_host_root_tier: bool,
    pub events_retention: Duration,
    pub log_format: LogFormat,
    /// `RUST_LOG`: the log filter, checked at parse time.
    pub log_filter: String,
    pub images: ImageMode,
    /// Passed to pull and create; `None` is no preference.
    pub platform: Option<Platform>,
    pub tiers: TierOverrides,
    pub platform_url: String,
    /// WORKSPACE_IMAGE_LOCAL_OVERRIDE: ignore pins, use the tag as found in
    /// the local image store, never pull.
    pub local_override: bool,
    /// GHCR_USER/GHCR_TOKEN, for the registry host of the registry prefix.
    pub registry_auth: Option<RegistryAuth>,
    /// The login behind a command: `$SUDO_USER` (who ran sudo), else
    /// `$USER`. `berth pin` and `rollback` record it as `updated_by` when
    /// `--by` is not given.
    pub operator: Option<String>,
    /// What each setting resolved to and where from, for `berth config`.
    pub effective: Vec<Effective>,
}

/// Pin rollout waves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rollout {
    pub canary: u32,
    pub max_parallel: u32,
    /// Failures over this share of a rollout's replaces halt it (0.0..=1.0).
    pub max_failure_ratio: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
    /// Pretty on a terminal, else JSON.
    Auto,
}

/// Where images come from. Every caller matches on the mode.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageMode {
    /// `MOLECULE_IMAGE_REGISTRY` is set: images are `<prefix>/<repository>`.
    Registry { prefix: String },
    /// No registry: runtime images are built from template git repositories.
    LocalBuild {
        repo_prefix: SecretUrl,
        cache_dir: PathBuf,
        gitea_token: Option<Secret<String>>,
    },
}

impl ImageMode {
    /// The mode in words, for `berth config` (secrets masked).
    pub fn describe(&self) -> String {
        match self {
            ImageMode::Registry { prefix } => format!("registry (images from {prefix})"),
            ImageMode::LocalBuild { repo_prefix, .. } => {
                format!("local-build (templates from {repo_prefix}<runtime>)")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RegistryAuth {
    pub user: String,
    pub token: Secret<String>,
}

/// A URL that may carry credentials (the database URL, a git URL prefix).
/// `Display` and `Debug` mask its password.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Secret<String>);

impl SecretUrl {
    pub fn new(raw: &str) -> Self {
        Self(Secret::new(raw.to_string()))
    }

    /// The URL with its password, for the one place that connects.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The URL with any password replaced by `***`.
    pub fn masked(&self) -> String {
        mask_url(self.0.expose())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.masked())
    }
}

/// Where a setting's effective value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::Default => "default",
        })
    }
}

/// One line of `berth config`: a setting, its value (secrets masked) and
/// where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effective {
    pub name: &'static str,
    pub value: String,
    pub source: Source,
}

/// One bad value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub name: &'static str,
    /// The value as given (masked for secrets), or empty when the problem
    /// is a missing or conflicting setting.
    pub value: Option<String>,
    pub message: String,
    /// The value came from the setting's flag, not its environment
    /// variable: the error names the flag the operator typed.
    pub from_flag: bool,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.value, self.from_flag) {
            (Some(v), true) => write!(
                f,
                "--{}={:?} ({}): {}",
                settings::flag_name(self.name),
                v,
                self.name,
                self.message
            ),
            (Some(v), false) => write!(f, "{}={:?}: {}", self.name, v, self.message),
            (None, _) => write!(f, "{}: {}", self.name, self.message),
        }
    }
}

/// Every bad value found, in settings order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} bad configuration value(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads the process environment and the given flag values (keyed by
    /// environment name). This is the only environment access in berth.
    pub fn from_process(flags: &HashMap<&'static str, String>) -> Result<Self, ConfigErrors> {
        Self::from_sources(flags, |name| std::env::var(name).ok())
    }

    /// Builds the configuration from flag values (keyed by environment
    /// name) and an environment lookup; tests fill both from maps.
    pub fn from_sources(
        flags: &HashMap<&'static str, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigErrors> {
        let mut r = Resolver::new(flags, &env);
        let config = parse(&mut r);
        match (config, r.errors.is_empty()) {
            (Some(c), true) => Ok(Config {
                effective: r.effective,
                ..c
            }),
            _ => Err(ConfigErrors(r.errors)),
        }
    }
}

impl Config {
    /// Values that parse but work against the operator: said by `berth
    /// config` and logged as warnings when `berth run` starts.
    pub fn cautions(&self) -> Vec<String> {
        let mut out = Vec::new();
        if crate::http::is_public(&self.listen) {
            out.push(format!(
                "BERTH_LISTEN {} is reachable beyond this machine; /metrics shows this host's workspace counts",
                self.listen
            ));
        }
        if self.stop_timeout >= self.shutdown_grace {
            out.push(format!(
                "BERTH_STOP_TIMEOUT ({}) is not below BERTH_SHUTDOWN_GRACE ({}): a replace stopping a container when berth is told to stop is cut short, and the workspace stays down until a berth runs again",
                humantime::format_duration(self.stop_timeout),
                humantime::format_duration(self.shutdown_grace)
            ));
        }
        out
    }

    /// What the planner needs, from the same parsed values.
    pub fn plan_settings(&self) -> crate::plan::Settings {
        crate::plan::Settings {
            host_id: self.host_id.clone(),
            registry_prefix: match &self.images {
                ImageMode::Registry { prefix } => Some(prefix.clone()),
                ImageMode::LocalBuild { .. } => None,
            },
            local_override: self.local_override,
            platform: self.platform.clone(),
            platform_url: self.platform_url.clone(),
            network: self.network.clone(),
            workspace_roots: self.workspace_roots.clone(),
            allow_host_root_tier: self.allow_host_root_tier,
            tiers: self.tiers,
            delete_guard: self.delete_guard,
            orphan_grace: self.orphan_grace,
            ready_min_uptime: self.ready_min_uptime,
            provision_timeout: self.provision_timeout,
            crash_backoff_initial: self.crash_backoff_initial,
            crash_backoff_max: self.crash_backoff_max,
            crash_loop_restarts: self.crash_loop_restarts,
            stop_timeout: self.stop_timeout,
        }
    }
}

#[cfg(test)]
mod tests;
