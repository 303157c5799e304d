//! A runtime's template repository through the `git` command line:
//! `ls-remote` for its HEAD (no clone) and a shallow clone of that HEAD.
//!
//! Credentials never reach git's argv, which every user of the host can
//! read: the URL on git's command line has no user info. A password in the
//! prefix URL and `MOLECULE_GITEA_TOKEN` become an `Authorization` header,
//! and a user alone (which may be a token: `https://<token>@host/`) comes
//! back to git through a `url.<origin with user>.insteadOf` rewrite; both
//! are set through `GIT_CONFIG_*` variables of the child, which only its
//! own user can read, and are scoped to the repository's origin. Every URL
//! and every line git prints is masked (any user info) before it is shown.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use tokio::process::Command;

use crate::config::SecretUrl;
use crate::model::Secret;

/// Why a git command failed, already masked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {url}: {message}")]
pub struct GitError {
    pub what: &'static str,
    pub url: String,
    pub message: String,
}

/// One template repository and how to authenticate to it.
#[derive(Clone, Debug)]
pub struct Remote {
    /// What git is given: no user info; a local path as a `file://` URL.
    url: String,
    /// `Authorization: Basic …` and the origin it is sent to.
    header: Option<(String, Secret<String>)>,
    /// `url.<scheme>://<user>@<host>/.insteadOf` and the origin it
    /// rewrites: git fetches with the prefix's user alone as if the URL on
    /// its command line named it.
    user_rewrite: Option<(Secret<String>, String)>,
    /// Strings masked out of anything git prints (the password, the token
    /// and their header form).
    secrets: Vec<Secret<String>>,
}

impl Remote {
    /// The repository `<prefix><runtime>`. The token, when given,
    /// authenticates http(s) fetches as `oauth2` (or the URL's user).
    pub fn new(prefix: &SecretUrl, runtime: &str, token: Option<&Secret<String>>) -> Remote {
        let raw = format!("{}{runtime}", prefix.expose());
        let Some((scheme, rest)) = raw
            .split_once("://")
            .filter(|(s, _)| matches!(*s, "http" | "https"))
        else {
            let url = if raw.starts_with('/') {
                format!("file://{raw}")
            } else {
                raw
            };
            return Remote {
                url,
                header: None,
                user_rewrite: None,
                secrets: Vec::new(),
            };
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((info, host)) => (Some(info), host),
            None => (None, authority),
        };
        let (user, password) = match userinfo.map(|i| i.split_once(':').unwrap_or((i, ""))) {
            Some((user, password)) => (Some(user), Some(password).filter(|p| !p.is_empty())),
            None => (None, None),
        };
        let secret = token.map(|t| t.expose().as_str()).or(password);
        let mut secrets = Vec::new();
        let header = secret.map(|secret| {
            let pair = format!("{}:{secret}", user.unwrap_or("oauth2"));
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            secrets.push(Secret::new(secret.to_string()));
            secrets.push(Secret::new(encoded.clone()));
            let origin = format!("{scheme}://{host}/");
            (
                origin,
                Secret::new(format!("Authorization: Basic {encoded}")),
            )
        });
        if let Some(p) = password {
            secrets.push(Secret::new(p.to_string()));
        }
        // A user with a secret goes in the header. A user alone is either a
        // name (a credential helper's key) or a token git sends as the user
        // name: git gets it back through the rewrite, so it authenticates as
        // it would with the user in the URL.
        let user_rewrite = match (userinfo, &header) {
            (Some(info), None) => Some((
                Secret::new(format!("url.{scheme}://{info}@{host}/.insteadOf")),
                format!("{scheme}://{host}/"),
            )),
            _ => None,
        };
        Remote {
            url: format!("{scheme}://{host}{path}"),
            header,
            user_rewrite,
            secrets,
        }
    }

    /// The URL as it may be shown.
    pub fn shown(&self) -> String {
        SecretUrl::new(&self.url).masked()
    }

    /// The commit the repository's HEAD names now, asked of the remote.
    pub async fn head(&self, timeout: Duration) -> Result<String, GitError> {
        let out = self
            .run("ls-remote", &["ls-remote", &self.url, "HEAD"], timeout)
            .await?;
        out.lines()
            .find_map(|line| {
                let (commit, name) = line.split_once('\t')?;
                (name == "HEAD" && is_commit(commit)).then(|| commit.to_string())
            })
            .ok_or_else(|| self.error("ls-remote", "the repository has no HEAD commit".into()))
    }

    /// A shallow clone of HEAD into `dir` (which must not exist); the
    /// commit it checked out.
    pub async fn clone_into(&self, dir: &Path, timeout: Duration) -> Result<String, GitError> {
        let target = dir.to_string_lossy();
        let args = [
            "clone",
            "--depth",
            "1",
            "--no-tags",
            "--quiet",
            &self.url,
            &target,
        ];
        self.run("clone", &args, timeout).await?;
        let out = self
            .run(
                "rev-parse",
                &["-C", &target, "rev-parse", "HEAD"],
                Duration::from_secs(30),
            )
            .await?;
        let commit = out.trim();
        if is_commit(commit) {
            Ok(commit.to_string())
        } else {
            Err(self.error("clone", "the clone has no HEAD commit".into()))
        }
    }

    /// Runs git with `args`; its stdout, or its last stderr lines, masked.
    async fn run(
        &self,
        what: &'static str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<String, GitError> {
        let mut cmd = Command::new("git");
        cmd.args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut config: Vec<(String, String)> = Vec::new();
        if let Some((origin, value)) = &self.header {
            config.push((format!("http.{origin}.extraHeader"), value.expose().clone()));
        }
        if let Some((key, origin)) = &self.user_rewrite {
            config.push((key.expose().clone(), origin.clone()));
        }
        if !config.is_empty() {
            cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
            for (i, (key, value)) in config.into_iter().enumerate() {
                cmd.env(format!("GIT_CONFIG_KEY_{i}"), key)
                    .env(format!("GIT_CONFIG_VALUE_{i}"), value);
            }
        }
        let out = match tokio::time::timeout(timeout, cmd.output()).await {
            Err(_) => {
                let message = format!("no answer within {}", humantime::format_duration(timeout));
                return Err(self.error(what, message));
            }
            Ok(Err(e)) => return Err(self.error(what, format!("cannot run git: {e}"))),
            Ok(Ok(out)) => out,
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(3)..].join("; ");
        let message = if tail.is_empty() {
            format!("git exited with {}", out.status)
        } else {
            tail
        };
        Err(self.error(what, message))
    }

    fn error(&self, what: &'static str, message: String) -> GitError {
        GitError {
            what,
            url: self.shown(),
            message: self.mask(&message),
        }
    }

    /// `text` with every URL password and every known secret masked.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text
            .split(' ')
            .map(|word| {
                if word.contains("://") {
                    SecretUrl::new(word).masked()
                } else {
                    word.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        for secret in &self.secrets {
            if !secret.expose().is_empty() {
                out = out.replace(secret.expose().as_str(), "***");
            }
        }
        out
    }
}

/// 40 (SHA-1) or 64 (SHA-256) lower-case hex digits.
fn is_commit(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(prefix: &str, token: Option<&str>) -> Remote {
        let token = token.map(|t| Secret::new(t.to_string()));
        Remote::new(&SecretUrl::new(prefix), "codex", token.as_ref())
    }

    fn header(r: &Remote) -> Option<(String, String)> {
        r.header
            .as_ref()
            .map(|(origin, value)| (origin.clone(), value.expose().clone()))
    }

    #[test]
    fn a_password_in_the_prefix_moves_from_the_url_into_a_header() {
        let r = remote("https://bob:pw-123@git.example:3000/org/tpl-", None);
        assert_eq!(r.url, "https://git.example:3000/org/tpl-codex");
        let basic = base64::engine::general_purpose::STANDARD.encode("bob:pw-123");
        assert_eq!(
            header(&r),
            Some((
                "https://git.example:3000/".into(),
                format!("Authorization: Basic {basic}")
            ))
        );
        assert!(!format!("{r:?}").contains("pw-123"));
    }

    #[test]
    fn the_gitea_token_authenticates_as_oauth2_and_wins_over_a_url_password() {
        let r = remote("https://git.example/org/tpl-", Some("tok-456"));
        let basic = base64::engine::general_purpose::STANDARD.encode("oauth2:tok-456");
        assert_eq!(
            header(&r).unwrap().1,
            format!("Authorization: Basic {basic}")
        );
        assert_eq!(r.url, "https://git.example/org/tpl-codex");
        let both = remote("https://bob:pw@git.example/tpl-", Some("tok-456"));
        let basic = base64::engine::general_purpose::STANDARD.encode("bob:tok-456");
        assert_eq!(
            header(&both).unwrap().1,
            format!("Authorization: Basic {basic}")
        );
        assert_eq!(both.mask("x pw y tok-456 z"), "x *** y *** z");
    }

    #[test]
    fn local_paths_become_file_urls_and_ssh_is_left_alone() {
        assert_eq!(
            remote("/srv/git/tpl-", None).url,
            "file:///srv/git/tpl-codex"
        );
        let ssh = remote("git@git.example:org/tpl-", Some("tok"));
        assert_eq!(ssh.url, "git@git.example:org/tpl-codex");
        assert!(ssh.header.is_none(), "a token is for https only");
    }

    #[test]
    fn a_user_alone_leaves_the_url_for_a_rewrite_git_reads_from_its_environment() {
        let r = remote("https://tok-123@git.example:3000/org/tpl-", None);
        assert_eq!(r.url, "https://git.example:3000/org/tpl-codex");
        assert!(r.header.is_none());
        let (key, origin) = r.user_rewrite.as_ref().unwrap();
        assert_eq!(
            key.expose(),
            "url.https://tok-123@git.example:3000/.insteadOf"
        );
        assert_eq!(origin, "https://git.example:3000/");
        assert!(!format!("{r:?}").contains("tok-123"));
        assert_eq!(r.shown(), "https://git.example:3000/org/tpl-codex");
        let said = "fatal: could not read Password for 'https://tok-123@git.example:3000': terminal prompts disabled";
        assert!(!r.mask(said).contains("tok-123"), "{}", r.mask(said));
    }

    #[test]
    fn a_user_alone_with_the_gitea_token_goes_in_the_header() {
        let r = remote("https://bob@git.example/tpl-", Some("tok-456"));
        assert_eq!(r.url, "https://git.example/tpl-codex");
        assert!(r.user_rewrite.is_none());
        let basic = base64::engine::general_purpose::STANDARD.encode("bob:tok-456");
        assert_eq!(
            header(&r).unwrap().1,
            format!("Authorization: Basic {basic}")
        );
    }

    /// git sends a user alone as `user:` once the server asks, as it does
    /// with the user in the URL; the command line never names it.
    #[tokio::test]
    async fn git_still_authenticates_with_a_user_alone_and_never_shows_it() {
        use std::sync::{Arc, Mutex};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let server = tokio::spawn({
            let seen = seen.clone();
            async move {
                loop {
                    let (mut conn, _) = listener.accept().await.unwrap();
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&request).into_owned());
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"t\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                }
            }
        });
        let r = remote(&format!("http://tok-123@127.0.0.1:{port}/org/tpl-"), None);
        let err = r.head(Duration::from_secs(30)).await.unwrap_err();
        server.abort();
        let requests = seen.lock().unwrap().join("\n");
        let basic = base64::engine::general_purpose::STANDARD.encode("tok-123:");
        assert!(
            requests.contains(&format!("Authorization: Basic {basic}")),
            "{requests}"
        );
        assert!(!err.to_string().contains("tok-123"), "{err}");
    }

    #[test]
    fn messages_are_masked() {
        let r = remote("https://bob:pw-123@git.example/tpl-", None);
        let text = "fatal: unable to access 'https://bob:pw-123@git.example/tpl-codex/': 403";
        assert!(!r.mask(text).contains("pw-123"));
        assert_eq!(r.shown(), "https://git.example/tpl-codex");
    }

    #[test]
    fn commits_are_sha1_or_sha256_hex() {
        assert!(is_commit(&"a".repeat(40)));
        assert!(is_commit(&"0".repeat(64)));
        assert!(!is_commit(&"A".repeat(40)));
        assert!(!is_commit("ref: refs/heads/main"));
    }
}
