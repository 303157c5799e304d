//! Which replaces belong to a rollout, and to which: a pin's ring, a
//! moving tag or a local build moving a runtime onto a new image.

use crate::model::{ContainerSpec, Digest, ImageSource};
use crate::plan::{Change, Op, Plan, Why};

/// What a rollout moves.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Track {
    /// The pin of this ring.
    Pin(String),
    /// The runtime's moving tag.
    Tag,
    /// The runtime's local build.
    Build,
}

impl Track {
    pub fn as_str(&self) -> &str {
        match self {
            Track::Pin(ring) => ring,
            Track::Tag => "tag",
            Track::Build => "build",
        }
    }
}

/// One rollout: a runtime's track moving onto `to` (a manifest digest, or
/// for a build an image ID).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RolloutKey {
    pub runtime: String,
    pub track: Track,
    pub to: Digest,
}

/// A replace that belongs to a rollout.
#[derive(Debug, PartialEq, Eq)]
pub struct Replace {
    pub key: RolloutKey,
    pub from: Option<Digest>,
    pub image: String,
}

/// The rollout a plan's replace belongs to, if it is one: its first action
/// replaces `runtime`'s container onto a new pinned digest, a new digest of
/// its moving tag, or a new local build.
pub fn image_replace(plan: &Plan, runtime: &str) -> Option<Replace> {
    let first = plan.actions.first()?;
    let Why::Replace(change) = &first.why else {
        return None;
    };
    let spec = plan.actions.iter().find_map(|a| match &a.op {
        Op::Create(spec) => Some(spec),
        _ => None,
    })?;
    replace_of(change, spec, runtime)
}

/// The rollout a replace already under way belongs to (`Plan::resumed`,
/// onto `spec`), if it is one.
pub fn resumed_replace(plan: &Plan, spec: &ContainerSpec, runtime: &str) -> Option<Replace> {
    replace_of(plan.resumed.as_ref()?, spec, runtime)
}

/// The rollout `change` onto `spec` belongs to: a new pinned digest, a new
/// digest of a moving tag, or a new local build.
fn replace_of(change: &Change, spec: &ContainerSpec, runtime: &str) -> Option<Replace> {
    let (track, from, to) = match (change, &spec.image_source) {
        (Change::Digest { from, to }, ImageSource::Pinned { ring }) => {
            (Track::Pin(ring.clone()), from.clone(), to.clone())
        }
        (Change::Digest { from, to }, ImageSource::Tag) => (Track::Tag, from.clone(), to.clone()),
        (Change::Digest { from, to }, ImageSource::Explicit) if spec.image.is_moving() => {
            (Track::Tag, from.clone(), to.clone())
        }
        (Change::ImageId { from, to }, ImageSource::LocalBuild { .. }) => (
            Track::Build,
            Digest::parse(from).ok(),
            Digest::parse(to).ok()?,
        ),
        _ => return None,
    };
    Some(Replace {
        key: RolloutKey {
            runtime: runtime.to_string(),
            track,
            to,
        },
        from,
        image: spec.image.to_string(),
    })
}
