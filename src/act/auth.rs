//! Registry credentials for a pull or a distribution inspect (DESIGN §1.3):
//! GHCR_USER/GHCR_TOKEN for the registry host of the configured prefix,
//! else the docker CLI config file for the image's host — a credential
//! helper (`credHelpers`, then `credsStore`) or an `auths` entry. No entry
//! means an anonymous request.

use std::process::Stdio;
use std::time::Duration;

use bollard::auth::DockerCredentials;
use tokio::io::AsyncWriteExt;

use crate::model::Secret;

use super::{ActError, Executor};

/// Docker Hub's key in the config file, as the docker CLI writes it.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// The registry host of a reference: its first component when that looks
/// like a host (has `.` or `:`, or is `localhost`), else Docker Hub.
pub(crate) fn registry_host(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if looks_like_host(first) => first,
        _ => "docker.io",
    }
}

fn looks_like_host(s: &str) -> bool {
    s.contains('.') || s.contains(':') || s == "localhost"
}

/// The registry host of the configured prefix, which may be a bare host
/// (`ghcr.io`) or a host and a namespace (`ghcr.io/molecule-ai`).
fn prefix_host(prefix: &str) -> &str {
    let first = prefix.split('/').next().unwrap_or(prefix);
    if looks_like_host(first) {
        first
    } else {
        "docker.io"
    }
}

/// A config-file key (`https://ghcr.io`, `ghcr.io/v2/`, `ghcr.io`) as a
/// bare host, with Docker Hub's aliases folded into `docker.io`.
fn key_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

impl Executor {
    /// The credentials for `reference`'s registry, or `None` (anonymous).
    /// Which credentials went with a request for `reference` (`sent`: any
    /// did), for a refusal's message: never the credentials themselves.
    pub(crate) fn credentials_sent(&self, reference: &str, sent: bool) -> String {
        if !sent {
            let host = registry_host(reference);
            return match self.settings.images.registry_prefix() {
                Some(prefix) if self.settings.registry_auth.is_some() => format!(
                    "none: GHCR_USER/GHCR_TOKEN are for {}, not {host}, and the docker config has no entry for it",
                    prefix_host(prefix)
                ),
                _ => format!("none: no GHCR_USER/GHCR_TOKEN for {host} and no docker config entry"),
            };
        }
        let host = registry_host(reference);
        let prefix_host = self.settings.images.registry_prefix().map(prefix_host);
        if self.settings.registry_auth.is_some() && prefix_host == Some(host) {
            "GHCR_USER/GHCR_TOKEN".to_string()
        } else {
            match &self.settings.docker_config {
                Some(path) => format!("the docker config's ({})", path.display()),
                None => "the docker config's".to_string(),
            }
        }
    }

    pub(crate) async fn credentials(
        &self,
        reference: &str,
    ) -> Result<Option<Secret<DockerCredentials>>, ActError> {
        let host = registry_host(reference);
        let prefix_host = self.settings.images.registry_prefix().map(prefix_host);
        if let (Some(auth), Some(prefix_host)) = (&self.settings.registry_auth, prefix_host)
            && prefix_host == host
        {
            return Ok(Some(Secret::new(DockerCredentials {
                username: Some(auth.user.clone()),
                password: Some(auth.token.expose().clone()),
                serveraddress: Some(host.to_string()),
                ..Default::default()
            })));
        }
        let Some(path) = &self.settings.docker_config else {
            return Ok(None);
        };
        let bad = |message: String| ActError::RegistryAuth {
            image: reference.to_string(),
            message,
        };
        let text = match tokio::fs::read_to_string(path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad(format!("reading {}: {e}", path.display()))),
        };
        let file: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| bad(format!("{} is not JSON: {e}", path.display())))?;
        let helper = file["credHelpers"]
            .as_object()
            .and_then(|m| m.iter().find(|(k, _)| key_host(k) == host))
            .and_then(|(_, v)| v.as_str())
            .or_else(|| file["credsStore"].as_str())
            .filter(|s| !s.is_empty());
        if let Some(helper) = helper {
            return run_helper(helper, host).await.map_err(bad);
        }
        let entry = file["auths"]
            .as_object()
            .and_then(|m| m.iter().find(|(k, _)| key_host(k) == host))
            .map(|(_, v)| v);
        let Some(entry) = entry else {
            return Ok(None);
        };
        let field = |name: &str| entry[name].as_str().filter(|s| !s.is_empty());
        let mut creds = DockerCredentials {
            serveraddress: Some(host.to_string()),
            identitytoken: field("identitytoken").map(str::to_string),
            username: field("username").map(str::to_string),
            password: field("password").map(str::to_string),
            ..Default::default()
        };
        if let Some(auth) = field("auth") {
            let decoded = base64_decode(auth)
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| bad(format!("the auths entry for {host} is not base64")))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| bad(format!("the auths entry for {host} lacks user:password")))?;
            creds.username = Some(user.to_string());
            creds.password = Some(pass.to_string());
        }
        let empty = creds.username.is_none() && creds.identitytoken.is_none();
        Ok((!empty).then(|| Secret::new(creds)))
    }
}

/// `docker-credential-<helper> get` with the server on stdin; its JSON
/// answer `{"Username", "Secret"}` (`<token>` as user = identity token).
/// A helper that knows no credentials for the server means anonymous.
async fn run_helper(helper: &str, host: &str) -> Result<Option<Secret<DockerCredentials>>, String> {
    if !helper
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "credential helper name {helper:?} is not a plain name"
        ));
    }
    ask_helper(&format!("docker-credential-{helper}"), host, HELPER_TIMEOUT).await
}

/// The helper protocol's `get`, with `program` found on PATH (or given as
/// a path).
async fn ask_helper(
    program: &str,
    host: &str,
    timeout: Duration,
) -> Result<Option<Secret<DockerCredentials>>, String> {
    let server = if host == "docker.io" {
        DOCKER_HUB_KEY
    } else {
        host
    };
    let mut child = tokio::process::Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("running {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .await
            .map_err(|e| format!("writing to {program}: {e}"))?;
    }
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("{program} did not answer within {timeout:?}"))?
        .map_err(|e| format!("running {program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // The helper protocol's answer for an unknown server.
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!("{program} failed ({})", out.status));
    }
    let answer: serde_json::Value =
        serde_json::from_str(&stdout).map_err(|_| format!("{program} answered no JSON"))?;
    let user = answer["Username"].as_str().unwrap_or_default();
    let secret = answer["Secret"].as_str().unwrap_or_default().to_string();
    let mut creds = DockerCredentials {
        serveraddress: Some(host.to_string()),
        ..Default::default()
    };
    if user == "<token>" {
        creds.identitytoken = Some(secret);
    } else {
        creds.username = Some(user.to_string());
        creds.password = Some(secret);
    }
    Ok(Some(Secret::new(creds)))
}

/// Standard base64 with optional padding (the config file's `auth`).
/// The `auth` field of the docker config file: base64 of `user:password`.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn hosts_come_from_the_first_component_when_it_looks_like_one() {
        assert_eq!(registry_host("ghcr.io/org/img:latest"), "ghcr.io");
        assert_eq!(
            registry_host("127.0.0.1:5000/a/b@sha256:x"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_host("localhost/x"), "localhost");
        assert_eq!(registry_host("library/busybox"), "docker.io");
        assert_eq!(registry_host("busybox"), "docker.io");
        assert_eq!(prefix_host("ghcr.io"), "ghcr.io");
        assert_eq!(prefix_host("ghcr.io/molecule-ai"), "ghcr.io");
        assert_eq!(prefix_host("molecule-ai"), "docker.io");
        assert_eq!(key_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(key_host("https://ghcr.io"), "ghcr.io");
        assert_eq!(key_host("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn base64_decodes_the_auth_field() {
        assert_eq!(base64_decode("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(base64_decode("dTpw").unwrap(), b"u:p");
        assert_eq!(base64_decode("dTpwMQ==").unwrap(), b"u:p1");
        assert!(base64_decode("not base64!").is_none());
    }

    async fn creds_for(file: &str, reference: &str) -> Option<DockerCredentials> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, file).unwrap();
        let docker = Docker::connect_with_local_defaults().unwrap();
        let mut settings = super::super::tests::settings();
        settings.docker_config = Some(path);
        let exec = Executor::new(docker, settings);
        exec.credentials(reference)
            .await
            .unwrap()
            .map(|s| s.expose().clone())
    }

    use bollard::Docker;

    #[tokio::test]
    async fn auths_entries_give_user_and_password_for_the_images_host() {
        let file = r#"{"auths": {"https://reg.example:5000": {"auth": "dXNlcjpwYXNz"}}}"#;
        let creds = creds_for(file, "reg.example:5000/a/b:v1").await.unwrap();
        assert_eq!(creds.username.as_deref(), Some("user"));
        assert_eq!(creds.password.as_deref(), Some("pass"));
        assert!(creds_for(file, "other.example/a:v1").await.is_none());
    }

    /// An executor with GHCR credentials for `ghcr.io/molecule-ai`.
    fn ghcr_executor() -> Executor {
        let docker = Docker::connect_with_local_defaults().unwrap();
        let mut settings = super::super::tests::settings();
        settings.images = crate::act::Images::Registry {
            prefix: "ghcr.io/molecule-ai".into(),
        };
        settings.registry_auth = Some(crate::config::RegistryAuth {
            user: "bot".into(),
            token: Secret::new("ghp_x".into()),
        });
        Executor::new(docker, settings)
    }

    #[tokio::test]
    async fn a_refusal_names_which_credentials_went_never_their_value() {
        let exec = ghcr_executor();
        let ghcr = exec.credentials_sent("ghcr.io/molecule-ai/a:1", true);
        assert_eq!(ghcr, "GHCR_USER/GHCR_TOKEN");
        let other = exec.credentials_sent("quay.io/x/a:1", false);
        assert!(other.contains("are for ghcr.io, not quay.io"), "{other}");
        assert!(!format!("{ghcr}{other}").contains("ghp_x"));
    }

    #[tokio::test]
    async fn ghcr_credentials_serve_the_prefix_host_and_only_it() {
        let exec = ghcr_executor();
        let creds = exec
            .credentials("ghcr.io/molecule-ai/workspace-template-codex:latest")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(format!("{creds:?}"), "Secret(***)");
        assert_eq!(creds.expose().username.as_deref(), Some("bot"));
        assert_eq!(creds.expose().password.as_deref(), Some("ghp_x"));
        assert!(exec.credentials("quay.io/x/y:1").await.unwrap().is_none());
    }

    /// A helper script answering `get` with `body` and exit code `code`,
    /// after recording what it was asked on stdin.
    fn helper(dir: &Path, body: &str, code: i32) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("docker-credential-t{code}"));
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 9\ncat > {}/asked\necho '{body}'\nexit {code}\n",
            dir.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    #[tokio::test]
    async fn credential_helpers_answer_users_tokens_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let t = Duration::from_secs(5);
        let user = helper(
            dir.path(),
            r#"{"ServerURL":"x","Username":"u","Secret":"s"}"#,
            0,
        );
        let creds = ask_helper(&user, "ghcr.io", t).await.unwrap().unwrap();
        assert_eq!(creds.expose().username.as_deref(), Some("u"));
        assert_eq!(creds.expose().password.as_deref(), Some("s"));
        let asked = std::fs::read_to_string(dir.path().join("asked")).unwrap();
        assert_eq!(asked, "ghcr.io");

        ask_helper(&user, "docker.io", t).await.unwrap();
        let asked = std::fs::read_to_string(dir.path().join("asked")).unwrap();
        assert_eq!(asked, DOCKER_HUB_KEY);

        let dir = tempfile::tempdir().unwrap();
        let token = helper(dir.path(), r#"{"Username":"<token>","Secret":"idt"}"#, 0);
        let creds = ask_helper(&token, "ghcr.io", t).await.unwrap().unwrap();
        assert_eq!(creds.expose().identitytoken.as_deref(), Some("idt"));
        assert_eq!(creds.expose().username, None);

        let dir = tempfile::tempdir().unwrap();
        let unknown = helper(dir.path(), "credentials not found in native keychain", 1);
        assert!(ask_helper(&unknown, "ghcr.io", t).await.unwrap().is_none());

        let dir = tempfile::tempdir().unwrap();
        let broken = helper(dir.path(), "boom", 2);
        assert!(ask_helper(&broken, "ghcr.io", t).await.is_err());
        assert!(
            ask_helper("/nonexistent/helper", "ghcr.io", t)
                .await
                .is_err()
        );
        assert!(run_helper("../evil", "ghcr.io").await.is_err());
    }
}
