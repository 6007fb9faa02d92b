//! The replay store: every execution report sent (or due) to an API key, by session sequence, so
//! that a client logging on again with the last sequence it saw gets the ones it missed, in order.

use super::config::KeyId;
use std::collections::{HashMap, VecDeque};
use tickwire_core::{AccountId, Seq};
use tickwire_protocol::ExecReport;

/// Keeps execution reports per API key. Sequences are per key, gapless from 1; the hub assigns
/// them (`last_seq(key) + 1`), so a persistent store restores them across restarts.
pub trait ReplayStore {
    /// Stores `report`, whose `session_seq` is `last_seq(key) + 1`.
    fn append(&mut self, key: KeyId, report: &ExecReport);
    /// Highest sequence stored for `key` (0 = none).
    fn last_seq(&self, key: KeyId) -> Seq;
    /// Oldest sequence still retained for `key` (0 = none retained).
    fn first_seq(&self, key: KeyId) -> Seq;
    /// The report with this sequence, if retained.
    fn get(&self, key: KeyId, seq: Seq) -> Option<ExecReport>;
    /// `key` (an admin) follows `account` from now on. A store that outlives the process records
    /// it, so that a restart routes the same reports to the key; the default does nothing.
    fn record_follow(&mut self, _key: KeyId, _account: AccountId) {}
}

#[derive(Debug, Default)]
struct KeyLog {
    /// Sequence of `reports[0]`.
    first: Seq,
    reports: VecDeque<ExecReport>,
}

/// An in-memory store keeping the newest `per_key_capacity` reports of each key (older ones are
/// dropped; a client asking for them is resent from the oldest retained, see LogonAccepted's
/// `replay_from`).
#[derive(Debug)]
pub struct MemoryReplayStore {
    per_key_capacity: usize,
    keys: HashMap<KeyId, KeyLog>,
}

impl MemoryReplayStore {
    /// A store keeping at most `per_key_capacity` (≥ 1) reports per key.
    pub fn new(per_key_capacity: usize) -> MemoryReplayStore {
        MemoryReplayStore { per_key_capacity: per_key_capacity.max(1), keys: HashMap::new() }
    }
}

impl ReplayStore for MemoryReplayStore {
    fn append(&mut self, key: KeyId, report: &ExecReport) {
        let log = self.keys.entry(key).or_default();
        if log.reports.is_empty() {
            log.first = report.session_seq;
        }
        if log.reports.len() == self.per_key_capacity {
            log.reports.pop_front();
            log.first += 1;
        }
        log.reports.push_back(*report);
    }

    fn last_seq(&self, key: KeyId) -> Seq {
        self.keys.get(&key).map_or(0, |l| if l.reports.is_empty() { 0 } else { l.first + l.reports.len() as Seq - 1 })
    }

    fn first_seq(&self, key: KeyId) -> Seq {
        self.keys.get(&key).map_or(0, |l| if l.reports.is_empty() { 0 } else { l.first })
    }

    fn get(&self, key: KeyId, seq: Seq) -> Option<ExecReport> {
        let log = self.keys.get(&key)?;
        let i = seq.checked_sub(log.first)?;
        log.reports.get(usize::try_from(i).ok()?).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_protocol::ExecType;

    #[test]
    fn keeps_the_newest_per_key() {
        let mut s = MemoryReplayStore::new(2);
        assert_eq!((s.first_seq(1), s.last_seq(1)), (0, 0));
        for seq in 1..=3 {
            s.append(1, &ExecReport { session_seq: seq, ..ExecReport::empty(ExecType::Accepted) });
        }
        assert_eq!((s.first_seq(1), s.last_seq(1)), (2, 3));
        assert!(s.get(1, 1).is_none());
        assert_eq!(s.get(1, 3).unwrap().session_seq, 3);
        assert!(s.get(1, 4).is_none());
        assert!(s.get(2, 1).is_none());
    }
}
