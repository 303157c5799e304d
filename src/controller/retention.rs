//! Image retention: images berth pulled or built that no container uses
//! are removed, except the previous stable image of each runtime (kept so
//! a rollback needs no pull). An image berth did not pull or build is never
//! removed: only images recorded in `host_images` are candidates.
//!
//! What stays, for each recorded image of this host:
//! - any container on the engine (berth's or not, running or stopped) was
//!   created from it;
//! - its runtime is pinned to its digest now (the pin's workspaces are
//!   about to run it);
//! - its digest is what `berth rollback` would return one of its runtime's
//!   pins to (the previous stable digest);
//! - its digest is what one of its runtime's pins named before the current
//!   one (what a halt on another host writes back, stable or not);
//! - it is the most recently used of its runtime's images no container
//!   uses, when the runtime follows a moving tag or is built locally (no
//!   pin history says which image was stable before).
//!
//! Everything else is removed without force (a pulled image by the
//! reference its pull made, then by id when only berth's digests name it;
//! a build by id), and its record goes.
//! The decision ([`retain`]) is pure; [`sweep_images`] gathers its facts
//! and carries it out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use super::Controller;
use crate::act::{ActError, EnsuredImage, Executor, ImageRemoval};
use crate::desired::{self, HostImage, Lease, Made, NewImage};
use crate::model::ImageSource;

/// The sweep runs at most once every this many resync intervals (5 min at
/// the default 30 s).
pub const SWEEP_EVERY_RESYNCS: u32 = 10;

/// Why a recorded image stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Keep {
    /// A container on the engine was created from it.
    InUse,
    /// Its runtime is pinned to its digest.
    CurrentPin,
    /// A rollback of one of its runtime's pins returns to its digest.
    PreviousStable,
    /// One of its runtime's pins named its digest just before the current
    /// one: a halt (here or on another host) writes it back.
    PreviousPin,
    /// The most recently used of its runtime's unused images (moving tag
    /// or local build).
    LastUsed,
    /// A pass in flight is making an image of its repository local (it may
    /// not have created its container yet).
    InFlight,
}

/// The pins as the sweep needs them, per runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinFacts {
    /// The digests the runtime's pins name now (any ring).
    pub current: BTreeMap<String, BTreeSet<String>>,
    /// The digests a rollback of one of the runtime's pins returns to.
    pub previous: BTreeMap<String, BTreeSet<String>>,
    /// The digests the runtime's pins named just before their current ones.
    pub before: BTreeMap<String, BTreeSet<String>>,
    /// Runtimes with a `stable` pin: every row of theirs without an
    /// explicit image runs a pinned digest, so their pin history says which
    /// image was stable before.
    pub stable_pinned: BTreeSet<String>,
}

impl PinFacts {
    fn names(&self, map: &BTreeMap<String, BTreeSet<String>>, image: &HostImage) -> bool {
        match (&image.runtime, &image.digest) {
            (Some(runtime), Some(digest)) => map.get(runtime).is_some_and(|d| d.contains(digest)),
            _ => false,
        }
    }
}

/// Which recorded images stay, by image id, and why; the images of
/// `records` missing from the answer go.
pub fn retain(
    records: &[HostImage],
    in_use: &BTreeSet<String>,
    pins: &PinFacts,
) -> BTreeMap<String, Keep> {
    let mut keep = BTreeMap::new();
    for image in records {
        let why = if in_use.contains(&image.image_id) {
            Some(Keep::InUse)
        } else if pins.names(&pins.current, image) {
            Some(Keep::CurrentPin)
        } else if pins.names(&pins.previous, image) {
            Some(Keep::PreviousStable)
        } else if pins.names(&pins.before, image) {
            Some(Keep::PreviousPin)
        } else {
            None
        };
        if let Some(why) = why {
            keep.insert(image.image_id.clone(), why);
        }
    }
    // Runtimes without pin history to go by: the unused image used last.
    let mut last_used: BTreeMap<(&str, Made), &HostImage> = BTreeMap::new();
    for image in records {
        let Some(runtime) = image.runtime.as_deref() else {
            continue;
        };
        let by_history = image.made == Made::Pulled && pins.stable_pinned.contains(runtime);
        if by_history || in_use.contains(&image.image_id) {
            continue;
        }
        let slot = last_used.entry((runtime, image.made)).or_insert(image);
        let order = |i: &HostImage| (i.last_used_at, i.made_at, i.image_id.clone());
        if order(image) > order(slot) {
            *slot = image;
        }
    }
    for image in last_used.into_values() {
        keep.entry(image.image_id.clone()).or_insert(Keep::LastUsed);
    }
    keep
}

/// What a sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Images removed (or found gone), whose records went with them.
    pub removed: Vec<HostImage>,
    /// Recorded images kept, by id, and why.
    pub kept: BTreeMap<String, Keep>,
    /// Images the engine refused to remove (a container created meanwhile,
    /// a child image, a build another repository names); their records
    /// stay.
    pub refused: Vec<String>,
    /// Removals that failed otherwise (logged); their records stay.
    pub failed: usize,
    /// The lease was not held, or went during the sweep: it stopped there.
    pub lost_lease: bool,
    /// The sweep used its time and stopped; the rest waits for the next.
    pub unfinished: bool,
}

/// How long one sweep removes images for: it runs on the control loop,
/// which must keep turning.
const SWEEP_BUDGET: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("image retention: {0}")]
    Docker(#[from] ActError),
    #[error("image retention: database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("image retention: {0}")]
    Read(#[from] desired::ReadError),
}

/// The pins of the runtimes in `runtimes`, with what a rollback of each
/// returns to.
async fn pin_facts(pool: &PgPool, runtimes: &BTreeSet<&str>) -> Result<PinFacts, SweepError> {
    let mut facts = PinFacts::default();
    for pin in desired::load_pins(pool).await? {
        let runtime = pin.template_name.as_str();
        if !runtimes.contains(runtime) {
            continue;
        }
        let current = pin.digest.as_str();
        facts
            .current
            .entry(runtime.to_string())
            .or_default()
            .insert(current.to_string());
        if pin.ring == "stable" {
            facts.stable_pinned.insert(runtime.to_string());
        }
        if let Some(target) = desired::rollback_target(pool, runtime, &pin.ring, current).await? {
            facts
                .previous
                .entry(runtime.to_string())
                .or_default()
                .insert(target.digest);
        }
        if let Some(before) = desired::pinned_before(pool, runtime, &pin.ring, current).await? {
            facts
                .before
                .entry(runtime.to_string())
                .or_default()
                .insert(before);
        }
    }
    Ok(facts)
}

/// Removes the recorded images of the lease's host that [`retain`] does
/// not keep, and forgets their records. Does nothing without the lease and
/// stops when it goes. An image of a repository in `busy` (passes in flight
/// are making images of it local and may not have created their containers
/// yet) is kept.
pub async fn sweep_images(
    pool: &PgPool,
    executor: &Executor,
    lease: &watch::Receiver<Option<Lease>>,
    busy: &BTreeSet<String>,
) -> Result<Swept, SweepError> {
    let Some(held) = desired::holding(lease) else {
        return Ok(Swept {
            lost_lease: true,
            ..Swept::default()
        });
    };
    let still_held = || desired::still_holds(lease, &held);
    // Containers first: an image in use by one created after this list is
    // refused by the engine, never removed.
    let in_use = executor.image_ids_in_use().await?;
    let records = desired::host_images(pool, &held.host).await?;
    if records.is_empty() {
        return Ok(Swept::default());
    }
    let used: Vec<String> = records
        .iter()
        .filter(|r| in_use.contains(&r.image_id))
        .map(|r| r.image_id.clone())
        .collect();
    desired::mark_images_used(pool, &held, &used).await?;
    let runtimes: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r.runtime.as_deref())
        .collect();
    let pins = pin_facts(pool, &runtimes).await?;
    let mut kept = retain(&records, &in_use, &pins);
    for r in &records {
        // A reference berth cannot read is kept as well.
        let repository = crate::model::ImageRef::parse(&r.reference)
            .map(|image| crate::act::repository(&image).to_string())
            .ok();
        if repository.is_none_or(|repo| busy.contains(&repo)) {
            kept.entry(r.image_id.clone()).or_insert(Keep::InFlight);
        }
    }

    let mut swept = Swept {
        kept: kept.clone(),
        ..Swept::default()
    };
    let began = std::time::Instant::now();
    for image in records {
        if kept.contains_key(&image.image_id) {
            continue;
        }
        if !still_held() {
            swept.lost_lease = true;
            break;
        }
        if began.elapsed() > SWEEP_BUDGET {
            swept.unfinished = true;
            break;
        }
        let fence = {
            let (lease, held) = (lease.clone(), held.clone());
            std::sync::Arc::new(move || desired::still_holds(&lease, &held))
        };
        let pulled_as = pulled_as(&image);
        let removal = crate::act::fenced(
            fence,
            executor.remove_image(&image.image_id, pulled_as.as_deref()),
        )
        .await;
        match removal {
            Err(crate::act::ActError::Fenced { .. }) => {
                swept.lost_lease = true;
                break;
            }
            Ok(removal @ (ImageRemoval::Removed | ImageRemoval::Untagged | ImageRemoval::Gone)) => {
                if removal == ImageRemoval::Removed {
                    tracing::info!(
                        image_id = %image.image_id,
                        reference = %image.reference,
                        runtime = image.runtime.as_deref().unwrap_or(""),
                        "image retention: removed an image no container uses"
                    );
                } else if removal == ImageRemoval::Untagged {
                    tracing::info!(
                        image_id = %image.image_id,
                        reference = pulled_as.as_deref().unwrap_or_default(),
                        "image retention: removed berth's reference; the image stays, named otherwise (someone tagged it)"
                    );
                }
                desired::forget_image(pool, &held, &image.image_id).await?;
                swept.removed.push(image);
            }
            Ok(ImageRemoval::Kept) => {
                tracing::debug!(image_id = %image.image_id, "image retention: the engine keeps it (in use or named elsewhere)");
                swept.refused.push(image.image_id);
            }
            Err(error) => {
                tracing::warn!(image_id = %image.image_id, %error, "image retention: removing an image failed");
                swept.failed += 1;
            }
        }
    }
    Ok(swept)
}

/// The reference a recorded pull made (`<repository>@<digest>`; berth
/// pulls by digest and tags nothing), which a sweep removes first, so an
/// image someone else also tagged (one they built, loaded or tagged after
/// berth's pull) keeps their tag and stays. `None` for a build (berth's
/// own repository) or a record whose reference berth cannot read: the
/// image id goes.
fn pulled_as(image: &HostImage) -> Option<String> {
    match (&image.made, &image.digest) {
        (Made::Pulled, Some(digest)) => crate::model::ImageRef::parse(&image.reference)
            .ok()
            .map(|r| format!("{}@{digest}", crate::act::repository(&r))),
        _ => None,
    }
}

/// Records an image a pass made local as berth's when berth pulled or
/// built it; an image found already local is not berth's by that alone.
/// `runtime` is the row's; an explicit image belongs to no runtime. A
/// failed write is logged: the image then stays unrecorded, and so is
/// never removed.
pub(super) async fn record_ensured(
    pool: &PgPool,
    lease: &Lease,
    runtime: Option<&str>,
    source: &ImageSource,
    ensured: &EnsuredImage,
) {
    if ensured.id.is_empty() {
        return;
    }
    let made = match source {
        ImageSource::LocalBuild { .. } => Made::Built,
        _ if ensured.pulled => Made::Pulled,
        _ => return,
    };
    let runtime = match source {
        ImageSource::Explicit => None,
        _ => runtime.map(str::to_string),
    };
    let image = NewImage {
        image_id: ensured.id.clone(),
        reference: ensured.reference.clone(),
        runtime,
        digest: ensured.digest.as_ref().map(|d| d.as_str().to_string()),
        made,
    };
    if let Err(error) = desired::record_image(pool, lease, &image).await {
        tracing::warn!(image_id = %image.image_id, %error, "recording an image as berth's failed");
    }
}

/// When a sweep is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sweep {
    /// From the periodic reread: runs when the last began at least
    /// [`SWEEP_EVERY_RESYNCS`] resync intervals ago.
    IfDue,
    /// After a rollout completed: runs now.
    Now,
}

impl Controller {
    /// Sweeps unused images (see the module) while this instance holds the
    /// lease, keeping every image of a repository a pass in flight is
    /// making local (`busy`): such a pass may not have created its
    /// container yet. The controller loop awaits this, so no pass starts
    /// meanwhile. A failure is logged, never fatal.
    pub(super) async fn sweep_images(
        &self,
        lease: &watch::Receiver<Option<Lease>>,
        busy: &BTreeSet<String>,
        when: Sweep,
    ) {
        if desired::holding(lease).is_none() {
            return;
        }
        let every = match when {
            Sweep::IfDue => self.resync_interval.saturating_mul(SWEEP_EVERY_RESYNCS),
            Sweep::Now => Duration::ZERO,
        };
        if !self.executor.image_sweep_due(every) {
            return;
        }
        // The budget is checked between removals; the whole sweep is also
        // bounded, since one engine or database call may hang far longer.
        let bounded = tokio::time::timeout(
            SWEEP_BUDGET.saturating_mul(2),
            sweep_images(&self.pool, &self.executor, lease, busy),
        )
        .await;
        let Ok(swept) = bounded else {
            tracing::warn!("image retention: sweep timed out; it goes on at the next resync");
            self.executor.image_sweep_wanted();
            return;
        };
        match swept {
            Ok(swept) if swept.unfinished => {
                tracing::info!(
                    removed = swept.removed.len(),
                    "image retention: sweep out of time; it goes on at the next resync"
                );
                self.executor.image_sweep_wanted();
            }
            Ok(swept) if !swept.removed.is_empty() || swept.failed > 0 => tracing::info!(
                removed = swept.removed.len(),
                kept = swept.kept.len(),
                refused = swept.refused.len(),
                failed = swept.failed,
                "image retention: sweep done"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "image retention: sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests;
