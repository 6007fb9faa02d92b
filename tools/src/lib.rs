//! Tickwire command-line tools' shared code.
//!
//! - [`matchrun`]: run a CSV order file through the engine in-process (`tickwire-match`, golden
//!   tests).

pub mod matchrun;
