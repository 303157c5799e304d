//! Properties (filled next).
