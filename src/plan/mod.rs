//! The pure planner: row → container spec, facts → actions. No I/O, no
//! clock (now is an input), no async.
