//! The spec hash: a versioned SHA-256 over the material fields, stored in
//! the `berth.spec-hash` label as `<version>:<hex>`.
//!
//! Within one version equal hashes mean equal material. A container whose
//! label carries another version is compared field by field instead, so a
//! berth upgrade that changes the encoding recreates nothing that did not
//! really change. Changing the encoding or the whitelist means a new
//! version; the golden tests catch an accidental change.
//!
//! The image enters as its reference: a pinned reference carries its
//! digest, so a new pin is a new hash. A moving tag's digest is known only
//! once pulled; it is compared through the `berth.image-digest` label
//! instead (a new digest for the same tag is a change, an unknown one is
//! not).

use sha2::{Digest as _, Sha256};

use crate::model::Material;

/// The version this berth writes.
pub const VERSION: &str = "v1";

/// `v1:<64 hex>` of the material fields.
pub fn spec_hash(m: &Material) -> String {
    let mut e = Encoder(Sha256::new());
    e.str("berth.spec-hash.v1");
    e.str(&m.image);
    e.len(m.env.len());
    for var in &m.env {
        e.str(&var.key);
        e.str(var.value.expose());
    }
    e.strs(&m.binds);
    e.len(m.tmpfs.len());
    for (path, opts) in &m.tmpfs {
        e.str(path);
        e.str(opts);
    }
    e.bool(m.readonly_rootfs);
    e.int(m.memory);
    e.int(m.nano_cpus);
    e.bool(m.privileged);
    e.str(&m.pid_mode);
    e.str(&m.network_mode);
    e.strs(&m.network_aliases);
    e.strs(&m.ports);
    let digest = e.0.finalize();
    let mut out = String::with_capacity(VERSION.len() + 1 + 64);
    out.push_str(VERSION);
    out.push(':');
    for byte in digest.iter() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Length-prefixed fields: no two different materials encode alike.
struct Encoder(Sha256);

impl Encoder {
    fn len(&mut self, n: usize) {
        self.0.update((n as u64).to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.update(s.as_bytes());
    }
    fn strs(&mut self, list: &[String]) {
        self.len(list.len());
        for s in list {
            self.str(s);
        }
    }
    fn bool(&mut self, b: bool) {
        self.0.update([u8::from(b)]);
    }
    fn int(&mut self, i: i64) {
        self.0.update(i.to_le_bytes());
    }
}

/// Whether a container created from `observed` runs the image `desired`
/// names. The executor creates a container for a moving reference from the
/// digest it resolved, keeping the reference's text (`repo:tag@sha256:…`,
/// or `repo@sha256:…` for a reference without a tag), so that is the
/// reference's image as far as the material is concerned; whether the tag
/// has moved since is a question of the digest labels, not of this text.
/// A pin's container (`repo@sha256:…`) is not a tag's: a row moving from
/// its pin to an explicit tag is an image change.
pub fn same_image(desired: &str, observed: &str) -> bool {
    if desired == observed {
        return true;
    }
    let Some((named, _digest)) = observed.split_once('@') else {
        return false;
    };
    !desired.contains('@') && named == desired
}

/// The names of the material fields that differ, in a fixed order.
pub fn changed_fields(desired: &Material, observed: &Material) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |name, differs: bool| {
        if differs {
            out.push(name);
        }
    };
    check("image", !same_image(&desired.image, &observed.image));
    check("env", desired.env != observed.env);
    check("binds", desired.binds != observed.binds);
    check("tmpfs", desired.tmpfs != observed.tmpfs);
    check(
        "readonly_rootfs",
        desired.readonly_rootfs != observed.readonly_rootfs,
    );
    check("memory", desired.memory != observed.memory);
    check("nano_cpus", desired.nano_cpus != observed.nano_cpus);
    check("privileged", desired.privileged != observed.privileged);
    check("pid_mode", desired.pid_mode != observed.pid_mode);
    check(
        "network_mode",
        desired.network_mode != observed.network_mode,
    );
    check(
        "network_aliases",
        desired.network_aliases != observed.network_aliases,
    );
    check("ports", desired.ports != observed.ports);
    out
}

#[cfg(test)]
mod same_image_tests {
    use super::same_image;

    #[test]
    fn a_tag_matches_the_digest_reference_it_was_created_from() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert!(
            !same_image(
                "reg:5000/ws/agent:v1",
                &format!("reg:5000/ws/agent@{digest}")
            ),
            "a pin's container is not the tag's"
        );
        assert!(same_image(
            "reg:5000/ws/agent",
            &format!("reg:5000/ws/agent@{digest}")
        ));
        assert!(same_image("reg:5000/ws/agent:v1", "reg:5000/ws/agent:v1"));
        assert!(same_image(
            "reg:5000/ws/agent:v1",
            &format!("reg:5000/ws/agent:v1@{digest}")
        ));
        assert!(!same_image(
            "reg:5000/ws/agent:v1",
            &format!("reg:5000/ws/agent:v2@{digest}")
        ));
        assert!(!same_image(
            "reg:5000/ws/agent:v1",
            &format!("reg:5000/ws/other@{digest}")
        ));
        assert!(!same_image("reg:5000/ws/agent:v1", "reg:5000/ws/agent:v2"));
        let pinned = format!("reg:5000/ws/agent@{digest}");
        let other = format!("reg:5000/ws/agent@sha256:{}", "b".repeat(64));
        assert!(!same_image(&pinned, &other));
    }
}
