//! The observed side: what is on this host's Docker Engine.
//!
//! One full list of the containers and volumes carrying berth's ownership
//! label (and of anything named `ws-…`, to see name clashes), then the
//! label-filtered container event stream applied to the cache. The stream
//! is lossy, so every (re)connect relists and replaces the cache in one
//! swap, a periodic relist runs as well, and the cache is incomplete from a
//! lost stream until the next full list lands. Volumes carry no labels in
//! events: they are tracked by listing.

mod cache;
mod convert;
mod watch;

pub use cache::{Observed, Trigger};
pub use watch::{Observer, sync_workspace};
