//! The controller: triggers feed a keyed queue; each pass rereads both
//! sides, plans, executes and writes the status back.

mod queue;

pub use queue::WorkQueue;
