//! Identifiers, object names and labels, each valid by construction.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// The ownership label berth shares with the Go provisioner it replaces.
pub const LABEL_MANAGED: &str = "molecule.platform.managed";
/// The full workspace id (text form of the uuid).
pub const LABEL_WORKSPACE: &str = "berth.workspace";
/// The berth host id that owns the object.
pub const LABEL_HOST: &str = "berth.host";
/// `<version>:<hex>` of the container's material fields.
pub const LABEL_SPEC_HASH: &str = "berth.spec-hash";
/// The manifest digest the image was pulled by (absent for a local build).
pub const LABEL_IMAGE_DIGEST: &str = "berth.image-digest";
/// The image ID the container was created from.
pub const LABEL_IMAGE_ID: &str = "berth.image-id";
/// The row's `restart_epoch` when the container was created.
pub const LABEL_RESTART_EPOCH: &str = "berth.restart-epoch";
/// On the session volume: the row's `session_epoch` it was created for.
pub const LABEL_SESSION_EPOCH: &str = "berth.session-epoch";

/// A value that failed validation, with what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {problem}")]
pub struct InvalidValue {
    pub what: &'static str,
    pub value: String,
    pub problem: &'static str,
}

fn invalid(what: &'static str, value: &str, problem: &'static str) -> InvalidValue {
    let mut value = value.to_string();
    if value.len() > 80 {
        let mut end = 80;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
        value.push('…');
    }
    InvalidValue {
        what,
        value,
        problem,
    }
}

/// A workspace's id. Every Docker object name berth uses is derived here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkspaceId(pub Uuid);

impl WorkspaceId {
    /// The first 12 characters of the hyphenated text form, as the Go
    /// provisioner truncates it (so `0f8fad5b-d9c`, hyphen included).
    pub fn id12(&self) -> String {
        let mut text = self.0.hyphenated().to_string();
        text.truncate(12);
        text
    }

    /// `ws-<id12>`: the workspace's container.
    pub fn container_name(&self) -> String {
        format!("ws-{}", self.id12())
    }

    /// `ws-<id12>-prev`: the old container while a replace is under way.
    pub fn prev_container_name(&self) -> String {
        format!("ws-{}-prev", self.id12())
    }

    /// `ws-<id12>-configs`, mounted at /configs.
    pub fn configs_volume(&self) -> String {
        format!("ws-{}-configs", self.id12())
    }

    /// `ws-<id12>-claude-sessions`, mounted at /root/.claude/sessions.
    pub fn sessions_volume(&self) -> String {
        format!("ws-{}-claude-sessions", self.id12())
    }

    /// `ws-<full id>-workspace`, the /workspace volume when no host dir is
    /// mounted (the Go code uses the full id here, unlike the others).
    pub fn workspace_volume(&self) -> String {
        format!("ws-{}-workspace", self.0.hyphenated())
    }

    /// Every volume name the workspace may own, in a fixed order.
    pub fn volume_names(&self) -> [String; 3] {
        [
            self.configs_volume(),
            self.sessions_volume(),
            self.workspace_volume(),
        ]
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for WorkspaceId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(WorkspaceId)
            .map_err(|_| invalid("workspace id", s, "not a uuid"))
    }
}

/// An image manifest digest: `sha256:` and 64 lower-case hex digits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| invalid("digest", s, "does not start with sha256:"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("digest", s, "needs 64 lower-case hex digits"));
        }
        Ok(Digest(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `sha256:` and the first 12 hex digits, for human messages.
    pub fn short(&self) -> &str {
        &self.0[..19]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Docker image reference, `[registry/]path[:tag][@digest]`, checked
/// against the distribution reference grammar.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    text: String,
    digest: Option<Digest>,
    tag: Option<String>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let what = "image reference";
        if s.is_empty() || s.len() > 512 {
            return Err(invalid(what, s, "must be 1 to 512 characters"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(Digest::parse(d).map_err(|_| invalid(what, s, "bad digest"))?),
            ),
            None => (s, None),
        };
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            let ok_first = tag
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
            let ok_rest = tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok_first || !ok_rest || tag.len() > 128 {
                return Err(invalid(what, s, "bad tag"));
            }
        }
        if name.is_empty() || name.len() > 255 {
            return Err(invalid(what, s, "name must be 1 to 255 characters"));
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        if parts.len() > 1 && is_domain_like(parts[0]) {
            if !valid_domain(parts[0]) {
                return Err(invalid(what, s, "bad registry host"));
            }
            parts.remove(0);
        }
        if !parts.iter().all(|p| valid_path_component(p)) {
            return Err(invalid(
                what,
                s,
                "path components must be lower-case [a-z0-9._-]",
            ));
        }
        Ok(ImageRef {
            text: s.to_string(),
            digest,
            tag: tag.map(str::to_string),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The digest the reference is pinned to, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// A reference without a digest names whatever its tag points at now.
    pub fn is_moving(&self) -> bool {
        self.digest.is_none()
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn is_domain_like(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    port_ok && host.split('.').all(label_ok)
}

fn valid_path_component(p: &str) -> bool {
    let bytes = p.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    // Separators: one `.`, one or two `_`, or any run of `-`.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_go_provisioner() {
        let id: WorkspaceId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
        assert_eq!(id.id12(), "0f8fad5b-d9c");
        assert_eq!(id.container_name(), "ws-0f8fad5b-d9c");
        assert_eq!(id.prev_container_name(), "ws-0f8fad5b-d9c-prev");
        assert_eq!(id.configs_volume(), "ws-0f8fad5b-d9c-configs");
        assert_eq!(id.sessions_volume(), "ws-0f8fad5b-d9c-claude-sessions");
        assert_eq!(
            id.workspace_volume(),
            "ws-0f8fad5b-d9cb-469f-a165-70867728950e-workspace"
        );
    }

    #[test]
    fn digests_need_sha256_and_64_lower_hex() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(Digest::parse(&good).is_ok());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse(&format!("sha256:{}", "a".repeat(63))).is_err());
        assert!(Digest::parse(&"a".repeat(64)).is_err());
        assert!(Digest::parse(&format!("{good}\n")).is_err());
    }

    #[test]
    fn image_references_follow_the_distribution_grammar() {
        let d = format!("sha256:{}", "b".repeat(64));
        for ok in [
            "busybox",
            "ghcr.io/molecule-ai/workspace-template-claude-code:latest",
            "localhost:5000/a/b_c.d--e:v1.2-rc",
            "127.0.0.1:5000/x",
        ] {
            assert!(ImageRef::parse(ok).is_ok(), "{ok}");
        }
        let pinned = ImageRef::parse(&format!("r.io/x@{d}")).unwrap();
        assert_eq!(pinned.digest().map(Digest::as_str), Some(d.as_str()));
        assert!(!pinned.is_moving());
        for bad in [
            "",
            "Upper/case",
            "a b",
            "x:",
            "x:-bad",
            "x@sha256:zz",
            "/leading",
            "trailing/",
            "a//b",
            "a...b",
            "reg.io:port/x",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
