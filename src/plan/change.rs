//! Rule 8's question: does the container differ from the spec, and how.

use crate::model::{
    ContainerSpec, Digest, LABEL_IMAGE_DIGEST, LABEL_IMAGE_ID, LABEL_SESSION_EPOCH,
    LABEL_SPEC_HASH, ObservedContainer, WorkspaceRow,
};

use super::hash::{self, changed_fields};
use super::rules::Mine;
use super::{Change, Facts};

/// The session volume's recorded epoch when the row's is newer. A volume
/// without the label (the Go provisioner's) counts as epoch 0, the
/// column's default: kept at cut-over, discarded once the row is bumped.
pub(super) fn stale_session(
    f: &Facts,
    row: &WorkspaceRow,
    spec: &ContainerSpec,
    mine: &Mine,
) -> Option<(i64, i64)> {
    let name = f.id.sessions_volume();
    if !spec.volumes.iter().any(|v| v.name == name) {
        return None;
    }
    let volume = mine.volumes.iter().find(|v| v.name == name)?;
    let applied: i64 = match volume.label(LABEL_SESSION_EPOCH) {
        Some(text) => text.parse().ok()?,
        None => 0,
    };
    (applied < row.session_epoch).then_some((applied, row.session_epoch))
}

/// Rule 8's question: does the container differ from the spec, and how.
pub(super) fn change(
    f: &Facts,
    row: &WorkspaceRow,
    spec: &ContainerSpec,
    c: &ObservedContainer,
    mine: &Mine,
) -> Option<Change> {
    if c.is_legacy() {
        return Some(Change::Legacy);
    }
    let material = match c.spec_hash() {
        None => Some(Change::Hash {
            from: "none".into(),
            to: spec.hash.clone(),
        }),
        Some((version, _)) if version == hash::VERSION => {
            let label = c.label(LABEL_SPEC_HASH).unwrap_or_default();
            (label != spec.hash).then(|| describe(spec, c, label))
        }
        Some(_) => c
            .material
            .as_ref()
            .map(|m| changed_fields(&spec.material, m))
            .filter(|fields| !fields.is_empty())
            .map(Change::Fields),
    };
    material.or_else(|| drift(f, spec, c)).or_else(|| {
        stale_session(f, row, spec, mine).map(|(from, to)| Change::SessionEpoch { from, to })
    })
}

pub(super) fn describe(spec: &ContainerSpec, c: &ObservedContainer, label: &str) -> Change {
    if !hash::same_image(spec.image.as_str(), &c.image) {
        let from = c
            .image
            .split_once('@')
            .and_then(|(_, d)| Digest::parse(d).ok());
        return match (from, spec.image.digest()) {
            (Some(from), Some(to)) => Change::Digest {
                from: Some(from),
                to: to.clone(),
            },
            _ => Change::Image {
                from: c.image.clone(),
                to: spec.image.to_string(),
            },
        };
    }
    match c
        .material
        .as_ref()
        .map(|m| changed_fields(&spec.material, m))
    {
        Some(fields) if !fields.is_empty() => Change::Fields(fields),
        _ => Change::Hash {
            from: label.into(),
            to: spec.hash.clone(),
        },
    }
}

/// A moving tag that now resolves to another digest (or image) than the
/// container was made from. Unknown on either side is no change.
pub(super) fn drift(f: &Facts, spec: &ContainerSpec, c: &ObservedContainer) -> Option<Change> {
    if !spec.image.is_moving() {
        return None;
    }
    if let (Some(to), Some(from)) = (&f.image.digest, c.label(LABEL_IMAGE_DIGEST)) {
        if from != to.as_str() {
            return Some(Change::Digest {
                from: Digest::parse(from).ok(),
                to: to.clone(),
            });
        }
        return None;
    }
    match (&f.image.id, c.label(LABEL_IMAGE_ID)) {
        (Some(to), Some(from)) if from != to => Some(Change::ImageId {
            from: from.into(),
            to: to.clone(),
        }),
        _ => None,
    }
}
