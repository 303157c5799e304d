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
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::{DeleteGuard, Platform, Secret, TierOverrides};

mod settings;
mod values;

pub use settings::{SETTINGS, Setting, flag_name};
use values::*;

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
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={:?}: {}", self.name, v, self.message),
            None => write!(f, "{}: {}", self.name, self.message),
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

fn parse(r: &mut Resolver<'_>) -> Option<Config> {
    let database_url = r.required("DATABASE_URL", database_url, |u| u.masked());
    let docker_host = r.optional("DOCKER_HOST", docker_host, |h| h.clone());
    let home = r.raw("HOME").filter(|h| h.starts_with('/'));
    let default_docker_config = home.map(|h| format!("{h}/.docker")).unwrap_or_default();
    let docker_config_file = r.value(
        "DOCKER_CONFIG",
        &default_docker_config,
        |raw| {
            if raw.is_empty() {
                Ok(None)
            } else {
                absolute_path(raw).map(|dir| Some(dir.join("config.json")))
            }
        },
        |file| {
            file.as_ref()
                .map_or("(none: no HOME)".into(), |f| f.display().to_string())
        },
    );
    let host_id = r.value("BERTH_HOST_ID", "default", host_id, |h| h.clone());
    let listen = r.value("BERTH_LISTEN", "127.0.0.1:9464", socket_addr, |a| {
        a.to_string()
    });
    let concurrency = r.value("BERTH_CONCURRENCY", "8", positive::<usize>, |n| {
        n.to_string()
    });
    let resync_interval = r.duration("BERTH_RESYNC_INTERVAL", "30s");
    let orphan_grace = r.duration("BERTH_ORPHAN_GRACE", "5m");
    let delete_guard = r.value("BERTH_DELETE_GUARD", "", delete_guard, |g| g.to_string());
    let provision_timeout = provision_timeout(r);
    let ready_min_uptime = r.duration("BERTH_READY_MIN_UPTIME", "30s");
    let crash_backoff_initial = r.duration("BERTH_CRASH_BACKOFF_INITIAL", "10s");
    let crash_backoff_max = r.duration("BERTH_CRASH_BACKOFF_MAX", "5m");
    let crash_loop_restarts = r.value("BERTH_CRASH_LOOP_RESTARTS", "5", positive::<u32>, |n| {
        n.to_string()
    });
    let stop_timeout = r.duration("BERTH_STOP_TIMEOUT", "10s");
    let shutdown_grace = r.duration("BERTH_SHUTDOWN_GRACE", "30s");
    let pull_progress_timeout = r.duration("BERTH_PULL_PROGRESS_TIMEOUT", "2m");
    let pull_timeout = r.duration("BERTH_PULL_TIMEOUT", "15m");
    let tag_refresh = r.value("BERTH_TAG_REFRESH", "off", duration_or_off, |d| match d {
        Some(d) => humantime::format_duration(*d).to_string(),
        None => "off".into(),
    });
    let canary = r.value("BERTH_ROLLOUT_CANARY", "1", positive::<u32>, |n| {
        n.to_string()
    });
    let max_parallel = r.value("BERTH_ROLLOUT_MAX_PARALLEL", "1", positive::<u32>, |n| {
        n.to_string()
    });
    let max_failure_ratio = r.value("BERTH_ROLLOUT_MAX_FAILURE_RATIO", "0", ratio, |x| {
        x.to_string()
    });
    let pin_debounce = r.value("BERTH_PIN_DEBOUNCE", "5s", duration_or_zero, fmt_duration);
    let lease_ttl = r.value("BERTH_LEASE_TTL", "15s", lease_ttl, fmt_duration);
    let network = r.value("BERTH_NETWORK", "molecule-monorepo-net", network, |n| {
        n.clone()
    });
    let workspace_roots = r.value("BERTH_WORKSPACE_ROOTS", "", workspace_roots, |roots| {
        roots
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    });
    let allow_host_root_tier = r.value("BERTH_ALLOW_HOST_ROOT_TIER", "false", boolean, |b| {
        b.to_string()
    });
    let events_retention = r.duration("BERTH_EVENTS_RETENTION", "30d");
    let log_format = r.value("BERTH_LOG_FORMAT", "", log_format, |f| {
        match f {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
            LogFormat::Auto => "auto (pretty on a terminal, else json)",
        }
        .into()
    });
    let log_filter = r.value("RUST_LOG", "info", log_filter, |f| f.clone());
    let images = image_mode(r);
    let platform = platform(r);
    let tiers = tier_overrides(r);
    let platform_url = r.value(
        "PLATFORM_URL",
        "http://host.docker.internal:8080",
        http_url,
        |u| u.clone(),
    );
    let local_override = r.value("WORKSPACE_IMAGE_LOCAL_OVERRIDE", "false", boolean, |b| {
        b.to_string()
    });
    let registry_auth = registry_auth(r);

    if let (Some(initial), Some(max)) = (crash_backoff_initial, crash_backoff_max)
        && initial > max
    {
        r.conflict(
            "BERTH_CRASH_BACKOFF_INITIAL",
            "is longer than BERTH_CRASH_BACKOFF_MAX".into(),
        );
    }
    if let (Some(progress), Some(total)) = (pull_progress_timeout, pull_timeout)
        && progress > total
    {
        r.conflict(
            "BERTH_PULL_PROGRESS_TIMEOUT",
            "is longer than BERTH_PULL_TIMEOUT".into(),
        );
    }

    Some(Config {
        database_url: database_url?,
        docker_host: docker_host?,
        docker_config_file: docker_config_file?,
        host_id: host_id?,
        listen: listen?,
        concurrency: concurrency?,
        resync_interval: resync_interval?,
        orphan_grace: orphan_grace?,
        delete_guard: delete_guard?,
        provision_timeout: provision_timeout?,
        ready_min_uptime: ready_min_uptime?,
        crash_backoff_initial: crash_backoff_initial?,
        crash_backoff_max: crash_backoff_max?,
        crash_loop_restarts: crash_loop_restarts?,
        stop_timeout: stop_timeout?,
        shutdown_grace: shutdown_grace?,
        pull_progress_timeout: pull_progress_timeout?,
        pull_timeout: pull_timeout?,
        tag_refresh: tag_refresh?,
        rollout: Rollout {
            canary: canary?,
            max_parallel: max_parallel?,
            max_failure_ratio: max_failure_ratio?,
        },
        pin_debounce: pin_debounce?,
        lease_ttl: lease_ttl?,
        network: network?,
        workspace_roots: workspace_roots?,
        allow_host_root_tier: allow_host_root_tier?,
        events_retention: events_retention?,
        log_format: log_format?,
        log_filter: log_filter?,
        images: images?,
        platform: platform?,
        tiers: tiers?,
        platform_url: platform_url?,
        local_override: local_override?,
        registry_auth: registry_auth?,
        effective: Vec::new(),
    })
}

/// `BERTH_PROVISION_TIMEOUT`, or its Go-era alias `PROVISION_TIMEOUT_SECONDS`
/// (whole seconds); both set is an error.
fn provision_timeout(r: &mut Resolver<'_>) -> Option<Duration> {
    let alias = r.raw("PROVISION_TIMEOUT_SECONDS");
    let own = r.raw("BERTH_PROVISION_TIMEOUT");
    match (own, alias) {
        (Some(_), Some(_)) => {
            r.conflict(
                "PROVISION_TIMEOUT_SECONDS",
                "is an alias of BERTH_PROVISION_TIMEOUT: set only one".into(),
            );
            r.show(
                "PROVISION_TIMEOUT_SECONDS",
                "(conflict)".into(),
                Source::Env,
            );
            r.show("BERTH_PROVISION_TIMEOUT", "(conflict)".into(), Source::Env);
            None
        }
        (None, Some(_)) => {
            let d = r.value("PROVISION_TIMEOUT_SECONDS", "", seconds, fmt_duration);
            r.show(
                "BERTH_PROVISION_TIMEOUT",
                "(from PROVISION_TIMEOUT_SECONDS)".into(),
                Source::Env,
            );
            d
        }
        _ => {
            r.show(
                "PROVISION_TIMEOUT_SECONDS",
                "(unset)".into(),
                Source::Default,
            );
            r.duration("BERTH_PROVISION_TIMEOUT", "10m")
        }
    }
}

fn image_mode(r: &mut Resolver<'_>) -> Option<ImageMode> {
    let prefix = r.optional("MOLECULE_IMAGE_REGISTRY", registry_prefix, |p| p.clone());
    let repo_prefix = r.value(
        "MOLECULE_LOCAL_TEMPLATE_REPO_PREFIX",
        DEFAULT_TEMPLATE_REPO_PREFIX,
        repo_prefix,
        |p| p.masked(),
    );
    let default_cache = default_build_cache(|name| r.raw(name));
    let cache_dir = r.value(
        "MOLECULE_LOCAL_BUILD_CACHE",
        &default_cache.display().to_string(),
        absolute_path,
        |p| p.display().to_string(),
    );
    let gitea_token = r.optional("MOLECULE_GITEA_TOKEN", secret, |_| "***".into());
    match prefix? {
        Some(prefix) => Some(ImageMode::Registry { prefix }),
        None => Some(ImageMode::LocalBuild {
            repo_prefix: repo_prefix?,
            cache_dir: cache_dir?,
            gitea_token: gitea_token?,
        }),
    }
}

/// `$XDG_CACHE_HOME/berth/builds`, else `$HOME/.cache/berth/builds`, else
/// `/var/cache/berth/builds` (a system service without a home).
fn default_build_cache(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    let nonempty = |name: &str| env(name).filter(|v| v.starts_with('/'));
    if let Some(xdg) = nonempty("XDG_CACHE_HOME") {
        return Path::new(&xdg).join("berth/builds");
    }
    if let Some(home) = nonempty("HOME") {
        return Path::new(&home).join(".cache/berth/builds");
    }
    PathBuf::from("/var/cache/berth/builds")
}

/// `MOLECULE_IMAGE_PLATFORM`: set and empty is "no preference"; unset is
/// linux/amd64 on arm64 hosts (images are published for amd64) and no
/// preference elsewhere.
fn platform(r: &mut Resolver<'_>) -> Option<Option<Platform>> {
    const NAME: &str = "MOLECULE_IMAGE_PLATFORM";
    match r.raw_keep_empty(NAME) {
        Some((raw, source)) if raw.trim().is_empty() => {
            r.show(NAME, "(none: set but empty)".into(), source);
            Some(None)
        }
        Some((raw, source)) => match platform_value(&raw) {
            Ok(p) => {
                r.show(NAME, p.to_string(), source);
                Some(Some(p))
            }
            Err(message) => {
                r.bad(NAME, raw, message);
                None
            }
        },
        None => {
            let default =
                (std::env::consts::ARCH == "aarch64").then(|| Platform("linux/amd64".to_string()));
            let shown = match &default {
                Some(p) => format!("{p} (arm64 host)"),
                None => "(none)".into(),
            };
            r.show(NAME, shown, Source::Default);
            Some(default)
        }
    }
}

fn tier_overrides(r: &mut Resolver<'_>) -> Option<TierOverrides> {
    const MEMORY: [&str; 4] = [
        "TIER1_MEMORY_MB",
        "TIER2_MEMORY_MB",
        "TIER3_MEMORY_MB",
        "TIER4_MEMORY_MB",
    ];
    const CPU: [&str; 4] = [
        "TIER1_CPU_SHARES",
        "TIER2_CPU_SHARES",
        "TIER3_CPU_SHARES",
        "TIER4_CPU_SHARES",
    ];
    let mut tiers = TierOverrides::default();
    let mut ok = true;
    for i in 0..4 {
        let show = |v: &Option<u64>| v.map_or("(tier default)".into(), |n| n.to_string());
        match r.value(MEMORY[i], "", optional_positive, show) {
            Some(v) => tiers.memory_mb[i] = v,
            None => ok = false,
        }
        match r.value(CPU[i], "", optional_positive, show) {
            Some(v) => tiers.cpu_shares[i] = v,
            None => ok = false,
        }
    }
    ok.then_some(tiers)
}

fn registry_auth(r: &mut Resolver<'_>) -> Option<Option<RegistryAuth>> {
    let user = r.optional("GHCR_USER", |s| Ok(s.to_string()), |u| u.clone());
    let token = r.optional("GHCR_TOKEN", secret, |_| "***".into());
    match (user?, token?) {
        (Some(user), Some(token)) => Some(Some(RegistryAuth { user, token })),
        (None, None) => Some(None),
        (Some(_), None) => {
            r.conflict("GHCR_TOKEN", "is required when GHCR_USER is set".into());
            None
        }
        (None, Some(_)) => {
            r.conflict("GHCR_USER", "is required when GHCR_TOKEN is set".into());
            None
        }
    }
}

/// Resolves settings from flags and environment, collecting every error and
/// the effective value of each setting.
struct Resolver<'a> {
    flags: &'a HashMap<&'static str, String>,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
    effective: Vec<Effective>,
}

impl<'a> Resolver<'a> {
    fn new(
        flags: &'a HashMap<&'static str, String>,
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Self {
        Self {
            flags,
            env,
            errors: Vec::new(),
            effective: Vec::new(),
        }
    }

    fn setting(name: &str) -> &'static Setting {
        SETTINGS
            .iter()
            .find(|s| s.env == name)
            .unwrap_or_else(|| panic!("setting {name} is missing from config::SETTINGS"))
    }

    /// The raw value and its source, keeping an empty environment value.
    fn raw_keep_empty(&self, name: &str) -> Option<(String, Source)> {
        if let Some(v) = self.flags.get(name) {
            return Some((v.clone(), Source::Flag));
        }
        (self.env)(name).map(|v| (v, Source::Env))
    }

    /// The raw value, an empty one counting as unset.
    fn raw(&self, name: &str) -> Option<String> {
        self.raw_with_source(name).map(|(v, _)| v)
    }

    fn raw_with_source(&self, name: &str) -> Option<(String, Source)> {
        self.raw_keep_empty(name)
            .filter(|(v, _)| !v.trim().is_empty())
    }

    fn show(&mut self, name: &'static str, value: String, source: Source) {
        let setting = Self::setting(name);
        self.effective.push(Effective {
            name: setting.env,
            value,
            source,
        });
    }

    fn bad(&mut self, name: &'static str, raw: String, message: String) {
        let setting = Self::setting(name);
        let value = if setting.secret { "***".into() } else { raw };
        self.errors.push(ConfigError {
            name: setting.env,
            value: Some(value),
            message,
        });
    }

    fn conflict(&mut self, name: &'static str, message: String) {
        self.errors.push(ConfigError {
            name: Self::setting(name).env,
            value: None,
            message,
        });
    }

    /// A setting with a default (given in its raw form, `""` for a default
    /// the parser produces from an empty input).
    fn value<T>(
        &mut self,
        name: &'static str,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
        show: impl Fn(&T) -> String,
    ) -> Option<T> {
        let (raw, source) = self
            .raw_with_source(name)
            .unwrap_or_else(|| (default.to_string(), Source::Default));
        match parse(raw.trim()) {
            Ok(v) => {
                let shown = if Self::setting(name).secret {
                    "***".into()
                } else {
                    show(&v)
                };
                self.show(name, shown, source);
                Some(v)
            }
            Err(message) => {
                self.bad(name, raw, message);
                None
            }
        }
    }

    /// A setting that may be unset. `Some(None)` is unset, `None` invalid.
    fn optional<T>(
        &mut self,
        name: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
        show: impl Fn(&T) -> String,
    ) -> Option<Option<T>> {
        match self.raw_with_source(name) {
            None => {
                self.show(name, "(unset)".into(), Source::Default);
                Some(None)
            }
            Some((raw, source)) => match parse(raw.trim()) {
                Ok(v) => {
                    let shown = show(&v);
                    self.show(name, shown, source);
                    Some(Some(v))
                }
                Err(message) => {
                    self.bad(name, raw, message);
                    None
                }
            },
        }
    }

    fn required<T>(
        &mut self,
        name: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
        show: impl Fn(&T) -> String,
    ) -> Option<T> {
        match self.optional(name, parse, show)? {
            Some(v) => Some(v),
            None => {
                self.conflict(name, "is required".into());
                None
            }
        }
    }

    fn duration(&mut self, name: &'static str, default: &str) -> Option<Duration> {
        self.value(name, default, positive_duration, fmt_duration)
    }
}

#[cfg(test)]
mod tests;
