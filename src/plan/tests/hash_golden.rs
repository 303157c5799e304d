//! The v1 spec hash of fixed specs, pinned: a change here recreates every
//! container of every host, so it must be a new version, never an accident.

use serde_json::json;

use super::*;
use crate::model::{EnvVar, Material, WorkspaceAccess};
use crate::plan::hash::{VERSION, changed_fields, spec_hash};

const ID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

fn fixed() -> WorkspaceRow {
    WorkspaceRow::test(ID.parse().expect("uuid"), t0())
}

#[test]
fn the_v1_hash_of_an_empty_material_is_pinned() {
    assert_eq!(VERSION, "v1");
    assert_eq!(spec_hash(&Material::default()), GOLDEN_EMPTY);
}

#[test]
fn the_v1_hash_of_a_standard_row_is_pinned() {
    let row = fixed().with_env(json!({"A": "1"}));
    assert_eq!(built(&row, &Settings::test()).hash, GOLDEN_STANDARD);
}

#[test]
fn the_v1_hash_of_a_t3_claude_code_row_is_pinned() {
    let row = fixed()
        .with_runtime("claude-code")
        .with_tier(3)
        .with_workspace(Some("/srv/workspaces/p"), WorkspaceAccess::ReadOnly);
    assert_eq!(built(&row, &Settings::test()).hash, GOLDEN_T3);
}

#[test]
fn fields_outside_the_whitelist_do_not_move_the_hash() {
    let a = built(&fixed(), &Settings::test());
    let mut other = fixed();
    other.name = "renamed".into();
    other.restart_epoch = 9;
    other.config_files = crate::model::Secret::new(json!({"config.yaml": "changed"}));
    assert_eq!(built(&other, &Settings::test()).hash, a.hash);
}

type Tweak = dyn Fn(&mut Material);

#[test]
fn every_material_field_moves_the_hash() {
    let base = built(&fixed(), &Settings::test()).material;
    let variants: Vec<Box<Tweak>> = vec![
        Box::new(|m| m.image.push('x')),
        Box::new(|m| m.env.push(EnvVar::new("X", "1"))),
        Box::new(|m| m.binds.push("a:/b".into())),
        Box::new(|m| {
            m.tmpfs.insert("/t".into(), "rw".into());
        }),
        Box::new(|m| m.readonly_rootfs = true),
        Box::new(|m| m.memory += 1),
        Box::new(|m| m.nano_cpus += 1),
        Box::new(|m| m.privileged = true),
        Box::new(|m| m.pid_mode = "host".into()),
        Box::new(|m| m.network_mode = "host".into()),
        Box::new(|m| m.network_aliases.clear()),
        Box::new(|m| m.ports.clear()),
    ];
    for (i, change) in variants.iter().enumerate() {
        let mut m = base.clone();
        change(&mut m);
        assert_ne!(spec_hash(&m), spec_hash(&base), "field {i}");
        assert_eq!(changed_fields(&m, &base).len(), 1, "field {i}");
    }
}

#[test]
fn an_env_value_moving_between_keys_changes_the_hash() {
    let a = Material {
        env: vec![EnvVar::new("AB", "C")],
        ..Material::default()
    };
    let b = Material {
        env: vec![EnvVar::new("A", "BC")],
        ..Material::default()
    };
    assert_ne!(spec_hash(&a), spec_hash(&b));
}

// The empty-material value was recomputed outside Rust from the encoding
// (length-prefixed little-endian fields, SHA-256) when it was pinned.
const GOLDEN_EMPTY: &str = "v1:c6e3ea05497795479053e0a5115680d195b903e7a4a389ed83e9fef0d7901c4c";
const GOLDEN_STANDARD: &str = "v1:5d654758840d475701bc50a046c620029c99f7d39291d2b9125bc7bb61808bdf";
const GOLDEN_T3: &str = "v1:361333d36166ac4ba196f0f6d114db023eacbdc881f55f1a7832ba445a6f49dc";
