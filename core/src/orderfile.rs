//! CSV order files (see README).
