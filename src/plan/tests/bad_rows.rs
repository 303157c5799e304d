//! Bad rows (filled next).
