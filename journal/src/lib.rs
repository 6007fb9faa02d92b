//! tickwire-journal: command journal, snapshots and recovery (issue 4).
