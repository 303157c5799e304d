//! Checks of the row's free-form inputs: env, host paths, config files.
//! Every failure is an `invalid_spec` with a message that names the field
//! and never shows a secret value.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::model::{EnvVar, MAX_CONFIG_BYTES, Secret, WorkspaceRow, is_configs_path};

use super::Settings;
use super::spec::InvalidSpec;

/// Largest env entry a process can be given: Linux's MAX_ARG_STRLEN, the
/// `KEY=value` string with its closing NUL. A longer one makes every exec
/// in the container fail ("argument list too long").
pub const MAX_ENV_ENTRY: usize = 128 * 1024;
/// Largest total environment (`KEY=value` bytes summed).
pub const MAX_ENV_TOTAL: usize = 1024 * 1024;

/// The container's environment in DESIGN §1.3's order: the defaults, then
/// the row's keys sorted; a row key equal to a default replaces its value
/// in place, so no key appears twice.
pub fn env(row: &WorkspaceRow, settings: &Settings) -> Result<Vec<EnvVar>, InvalidSpec> {
    let mut env = vec![
        EnvVar::new("WORKSPACE_ID", &row.id.to_string()),
        EnvVar::new("WORKSPACE_CONFIG_PATH", "/configs"),
        EnvVar::new("PLATFORM_URL", &settings.platform_url),
        EnvVar::new("MOLECULE_URL", &settings.platform_url),
        // The row's tier as written, as the Go provisioner passes it; the
        // host config uses the effective tier.
        EnvVar::new("TIER", &row.tier.to_string()),
        EnvVar::new("PLUGINS_DIR", "/plugins"),
        EnvVar::new("PYTHONPATH", "/app"),
    ];
    let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    if let (Some(ns), Some(url)) = (
        non_empty(&row.awareness_namespace),
        non_empty(&row.awareness_url),
    ) {
        env.push(EnvVar::new("AWARENESS_NAMESPACE", &ns));
        env.push(EnvVar::new("AWARENESS_URL", &url));
    }
    let defaults = env.len();

    let object = row
        .env
        .expose()
        .as_object()
        .ok_or_else(|| InvalidSpec::invalid("env is not a JSON object"))?;
    let sorted: BTreeMap<&String, &serde_json::Value> = object.iter().collect();
    for (key, value) in sorted {
        check_env_key(key)?;
        let value = value.as_str().ok_or_else(|| {
            InvalidSpec::invalid(format!("env {} is not a string", shown_key(key)))
        })?;
        let entry = key.len() + 1 + value.len() + 1;
        if entry > MAX_ENV_ENTRY {
            return Err(InvalidSpec::invalid(format!(
                "env {} makes a {entry}-byte entry (KEY=value and its NUL), over the {} KiB a process's environment entry may hold",
                shown_key(key),
                MAX_ENV_ENTRY / 1024
            )));
        }
        if value.contains('\0') {
            return Err(InvalidSpec::invalid(format!(
                "env {} contains a NUL byte",
                shown_key(key)
            )));
        }
        match env[..defaults].iter_mut().find(|e| e.key == *key) {
            Some(default) => default.value = Secret::new(value.to_string()),
            None => env.push(EnvVar::new(key, value)),
        }
    }
    let total: usize = env
        .iter()
        .map(|e| e.key.len() + 1 + e.value.expose().len())
        .sum();
    if total > MAX_ENV_TOTAL {
        return Err(InvalidSpec::invalid(format!(
            "env totals {total} bytes, over the 1 MiB limit"
        )));
    }
    Ok(env)
}

fn check_env_key(key: &str) -> Result<(), InvalidSpec> {
    let problem = if key.is_empty() {
        "is empty"
    } else if key.contains('=') {
        "contains '='"
    } else if key.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(InvalidSpec::invalid(format!(
        "env key {} {problem}",
        shown_key(key)
    )))
}

/// A key as it may appear in a message: printable and short.
fn shown_key(key: &str) -> String {
    let clean: String = key
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!("{clean:?}")
}

/// An absolute host path made only of normal components, with nothing
/// Docker's bind syntax would misread (`:`, `,`) and no control character.
pub fn host_path(field: &str, path: &str) -> Result<PathBuf, InvalidSpec> {
    let bad = |problem: &str| InvalidSpec::invalid(format!("{field} {:?} {problem}", clip(path)));
    if !path.starts_with('/') {
        return Err(bad("is not absolute"));
    }
    if path.chars().any(|c| c.is_control() || c == ':' || c == ',') {
        return Err(bad("contains ':', ',' or a control character"));
    }
    if path.contains("//") || (path.len() > 1 && path.ends_with('/')) {
        return Err(bad("is not in normal form"));
    }
    let p = Path::new(path);
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(bad("contains '.' or '..'"));
    }
    Ok(p.to_path_buf())
}

/// `workspace_dir` must lie under one of `BERTH_WORKSPACE_ROOTS`
/// (component-wise: `/srv/ws2` is not under `/srv/ws`).
pub fn workspace_dir(dir: &str, settings: &Settings) -> Result<PathBuf, InvalidSpec> {
    let path = host_path("workspace_dir", dir)?;
    if settings
        .workspace_roots
        .iter()
        .any(|root| path.starts_with(root))
    {
        Ok(path)
    } else {
        Err(InvalidSpec::invalid(format!(
            "workspace_dir {:?} is outside the allowed roots (BERTH_WORKSPACE_ROOTS)",
            clip(dir)
        )))
    }
}

/// The most `config_files` may hold in a row. Rows are read at every
/// pass and resync: one row of tens of MiB made every read of the host's
/// rows take seconds and stalled every workspace. The template dir, read
/// only when files are written, may hold up to `MAX_CONFIG_BYTES`.
pub const MAX_ROW_CONFIG_BYTES: u64 = 4 * 1024 * 1024;
const _: () = assert!(MAX_ROW_CONFIG_BYTES <= MAX_CONFIG_BYTES);

/// The longest `auth_token` a row may carry: a token is short, and the
/// row is read at every pass.
pub const MAX_AUTH_TOKEN_BYTES: usize = 64 * 1024;

/// `auth_token`, written to /configs/.auth_token: at most
/// [`MAX_AUTH_TOKEN_BYTES`]. The message never shows the token.
pub fn auth_token(token: Option<&Secret<String>>) -> Result<Option<Secret<String>>, InvalidSpec> {
    match token {
        Some(t) if t.expose().len() > MAX_AUTH_TOKEN_BYTES => Err(InvalidSpec::invalid(format!(
            "auth_token holds {} bytes, over the {} KiB a token may (every pass reads the row)",
            t.expose().len(),
            MAX_AUTH_TOKEN_BYTES / 1024
        ))),
        t => Ok(t.cloned()),
    }
}

/// `config_files`: relative paths that stay inside /configs → string
/// content, CRLF stripped from .sh/.py/.md as the Go copy does.
pub fn config_files(
    value: &serde_json::Value,
) -> Result<BTreeMap<String, Secret<String>>, InvalidSpec> {
    let object = value
        .as_object()
        .ok_or_else(|| InvalidSpec::invalid("config_files is not a JSON object"))?;
    let mut files = BTreeMap::new();
    let mut total: u64 = 0;
    for (path, content) in object {
        check_config_path(path)?;
        let content = content.as_str().ok_or_else(|| {
            InvalidSpec::invalid(format!("config_files {:?} is not a string", clip(path)))
        })?;
        total = total.saturating_add(content.len() as u64);
        if total > MAX_ROW_CONFIG_BYTES {
            return Err(InvalidSpec::invalid(format!(
                "config_files hold more than the {} MiB a row may carry (every pass reads the row; larger files belong in template_path)",
                MAX_ROW_CONFIG_BYTES / (1024 * 1024)
            )));
        }
        files.insert(path.clone(), Secret::new(strip_crlf(path, content)));
    }
    // A file cannot also be a directory another file lies in.
    for path in files.keys() {
        let mut parent = std::path::Path::new(path).parent();
        while let Some(dir) = parent.and_then(|d| d.to_str()).filter(|d| !d.is_empty()) {
            if files.contains_key(dir) {
                return Err(InvalidSpec::invalid(format!(
                    "config_files {:?} is a file and also the directory of {:?}",
                    clip(dir),
                    clip(path)
                )));
            }
            parent = std::path::Path::new(dir).parent();
        }
    }
    Ok(files)
}

/// The longest file name and path the engine's file systems take
/// (NAME_MAX, and PATH_MAX less `/configs/`).
const MAX_NAME: usize = 255;
const MAX_PATH: usize = 4096 - "/configs/".len() - 1;

fn check_config_path(path: &str) -> Result<(), InvalidSpec> {
    let escapes = !is_configs_path(path);
    if escapes {
        return Err(InvalidSpec::invalid(format!(
            "config_files path {:?} is not a plain relative path inside /configs",
            clip(path)
        )));
    }
    if path.len() > MAX_PATH {
        return Err(InvalidSpec::invalid(format!(
            "config_files path {:?}… is {} bytes, over the {MAX_PATH} a path may hold",
            clip(path),
            path.len()
        )));
    }
    if let Some(name) = path.split('/').find(|c| c.len() > MAX_NAME) {
        return Err(InvalidSpec::invalid(format!(
            "config_files path {:?}: the name {:?}… is {} bytes, over the {MAX_NAME} a file name may hold",
            clip(path),
            clip(name),
            name.len()
        )));
    }
    Ok(())
}

/// Scripts and docs lose their CR before LF (see `model::strip_crlf`).
pub fn strip_crlf(path: &str, content: &str) -> String {
    String::from_utf8(crate::model::strip_crlf(path, content.as_bytes()))
        .unwrap_or_else(|_| content.to_string())
}

fn clip(s: &str) -> String {
    s.chars().take(120).collect()
}
