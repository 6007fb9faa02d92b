//! Re-logon replay across a server restart.
//!
//! The execution reports of a key are a deterministic function of (1) the engine events, in
//! order, (2) the reports the gateway produced itself (its rejects: throttled, not_authorised,
//! duplicate_order_id, capacity_exhausted), which never reach the engine and so are not in the
//! command journal, and (3) which accounts each admin key follows (it follows an account from its
//! first message for it on), which the journal does not say either. On start the server
//! therefore rebuilds every key's report stream (and so its session sequences) by replaying the
//! journal through a fresh engine and the session [`Hub`], splicing in the gateway rejects and
//! the admin follows from a small side log, the [`RejectLog`] (`<data_dir>/gateway-rejects.log`),
//! at the point they were produced. The same replay marks every journaled NewOrder's client order
//! id as used, so a NewOrder resent after a restart is refused `duplicate_order_id` instead of
//! creating a second order.
//!
//! Placement of an entry: when it is stored, the store records the highest engine sequence of any
//! report stored so far (the *watermark* `W`). On replay it is applied right before the first
//! engine event whose sequence is above `W`; events in between produced no report, so every
//! key's sequence comes out the same. (A follow is logged before its admin's command is
//! submitted, so it is applied before that command's events, as it was live.)
//!
//! Entries are buffered and written (one `write`) and `fdatasync`ed (journal modes `sync` and
//! `async`) by [`RejectLog::sync`], which the event loop calls before it writes a turn's output
//! to the sockets: no reject reaches a client before it is on disk, and one turn costs one write
//! whatever the number of rejects in it. The log is kept as long as the journal it goes with (the
//! server rebuilds from the whole journal); the throttle bounds how fast one key can grow it
//! (docs/protocol.md, Throttling).
//!
//! Record (120 bytes, little-endian): `kind u32`, `reserved u32 = 0`, `watermark u64`,
//! `key u64`, 88 bytes of body, `check u64` = FNV-1a 64 of the 112 bytes before it. Kind 1, a
//! gateway reject: the body is the ExecutionReport frame, exactly as sent. Kind 2, an admin
//! follow: the body is `account u32` then 84 zero bytes. A short or bad last record (torn write)
//! is cut on open.

use crate::session::{Hub, KeyId, MemoryReplayStore, ReplayStore};
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tickwire_core::hash::StateHasher;
use tickwire_core::{AccountId, CommandKind, Engine, EngineConfig, Event, Seq};
use tickwire_journal::Recovered;
use tickwire_protocol::{Decoded, ExecReport, Message, ServerMsg, EXEC_GATEWAY, MAX_FRAME};

const RECORD_LEN: usize = 120;
const KIND_REJECT: u32 = 1;
const KIND_FOLLOW: u32 = 2;
/// Buffered bytes beyond which an append writes at once rather than waiting for the next sync.
const PENDING_BYTES_MAX: usize = 64 << 10;

/// One gateway reject from the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectEntry {
    /// Highest engine sequence among the reports stored before it.
    pub watermark: Seq,
    /// The key it was sent to.
    pub key: KeyId,
    /// The report, with its session sequence.
    pub report: ExecReport,
}

/// One entry of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogEntry {
    /// A gateway reject.
    Reject(RejectEntry),
    /// An admin key started following an account.
    Follow {
        /// Highest engine sequence among the reports stored before it.
        watermark: Seq,
        /// The admin key.
        key: KeyId,
        /// The account it follows from then on.
        account: AccountId,
    },
}

impl LogEntry {
    fn watermark(&self) -> Seq {
        match self {
            LogEntry::Reject(e) => e.watermark,
            LogEntry::Follow { watermark, .. } => *watermark,
        }
    }
}

fn check(b: &[u8]) -> u64 {
    let mut h = StateHasher::default();
    for c in b.chunks(8) {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        h.word(u64::from_le_bytes(w));
    }
    h.finish()
}

fn encode(e: &LogEntry) -> [u8; RECORD_LEN] {
    let mut b = [0u8; RECORD_LEN];
    let (kind, watermark, key) = match e {
        LogEntry::Reject(r) => {
            // 88 bytes always fit.
            let _ = r.report.encode(&mut b[24..112]);
            (KIND_REJECT, r.watermark, r.key)
        }
        LogEntry::Follow { watermark, key, account } => {
            b[24..28].copy_from_slice(&account.to_le_bytes());
            (KIND_FOLLOW, *watermark, *key)
        }
    };
    b[0..4].copy_from_slice(&kind.to_le_bytes());
    b[8..16].copy_from_slice(&watermark.to_le_bytes());
    b[16..24].copy_from_slice(&key.to_le_bytes());
    let c = check(&b[..112]);
    b[112..120].copy_from_slice(&c.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<LogEntry> {
    if b.len() != RECORD_LEN {
        return None;
    }
    let u64_at = |o: usize| b.get(o..o + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes);
    let u32_at = |o: usize| b.get(o..o + 4).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes);
    if u64_at(112)? != check(&b[..112]) || u32_at(4)? != 0 {
        return None;
    }
    let (watermark, key) = (u64_at(8)?, u64_at(16)?);
    match u32_at(0)? {
        KIND_REJECT => match ServerMsg::decode(&b[24..112], MAX_FRAME) {
            Decoded::Frame(ServerMsg::ExecReport(report), 88) => {
                Some(LogEntry::Reject(RejectEntry { watermark, key, report }))
            }
            _ => None,
        },
        KIND_FOLLOW if b[28..112].iter().all(|&x| x == 0) => {
            Some(LogEntry::Follow { watermark, key, account: u32_at(24)? })
        }
        _ => None,
    }
}

/// The append-only log of gateway rejects and admin follows (see the module documentation).
#[derive(Debug)]
pub struct RejectLog {
    path: PathBuf,
    file: Option<File>,
    /// Appends enabled (off while the startup replay re-stores old rejects).
    enabled: bool,
    /// Appended records not yet written.
    pending: Vec<u8>,
    /// Written but not yet `fdatasync`ed.
    dirty: bool,
    sync: bool,
    /// Last I/O error (the loop logs it; the report is still sent).
    pub error: Option<String>,
    written: u64,
}

impl RejectLog {
    /// Opens (creating) the log at `path`, cutting a torn last record, and returns its entries.
    /// `sync`: `fdatasync` in [`RejectLog::sync`].
    pub fn open(path: &Path, sync: bool) -> std::io::Result<(RejectLog, Vec<LogEntry>)> {
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut entries = Vec::new();
        let mut good = 0usize;
        for rec in bytes.chunks(RECORD_LEN) {
            match decode(rec) {
                Some(e) => {
                    entries.push(e);
                    good += RECORD_LEN;
                }
                None => break,
            }
        }
        if good < bytes.len() {
            eprintln!(
                "tickwire: {}: cut {} bytes of a torn or damaged tail after {} records",
                path.display(),
                bytes.len() - good,
                entries.len()
            );
            file.set_len(good as u64)?;
            file.sync_all()?;
        }
        Ok((
            RejectLog {
                path: path.to_path_buf(),
                file: Some(file),
                enabled: false,
                pending: Vec::new(),
                dirty: false,
                sync,
                error: None,
                written: 0,
            },
            entries,
        ))
    }

    /// A log that writes nothing (tests, or no data directory).
    pub fn disabled() -> RejectLog {
        RejectLog {
            path: PathBuf::new(),
            file: None,
            enabled: false,
            pending: Vec::new(),
            dirty: false,
            sync: false,
            error: None,
            written: 0,
        }
    }

    /// Turns appending on (after the startup replay).
    pub fn enable(&mut self) {
        self.enabled = self.file.is_some();
    }

    fn append(&mut self, e: &LogEntry) {
        if !self.enabled {
            return;
        }
        self.pending.extend_from_slice(&encode(e));
        self.written += 1;
        if self.pending.len() >= PENDING_BYTES_MAX {
            self.write_pending();
        }
    }

    fn write_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let Some(f) = self.file.as_mut() else { return };
        if let Err(err) = f.write_all(&self.pending) {
            self.error = Some(format!("{}: {err}", self.path.display()));
            self.enabled = false;
        }
        self.pending.clear();
        self.dirty = true;
    }

    /// Whether appends wait for [`RejectLog::sync`].
    pub fn is_dirty(&self) -> bool {
        self.dirty || !self.pending.is_empty()
    }

    /// Writes what was appended since the last call and `fdatasync`s it (no sync without `sync`).
    pub fn sync(&mut self) {
        self.write_pending();
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if !self.sync {
            return;
        }
        if let Some(f) = &self.file {
            if let Err(err) = f.sync_data() {
                self.error = Some(format!("{}: fdatasync: {err}", self.path.display()));
            }
        }
    }

    /// Records appended since start.
    pub fn written(&self) -> u64 {
        self.written
    }
}

/// The server's replay store: in memory (newest `per_key` reports per key), logging gateway
/// rejects to the shared [`RejectLog`].
pub struct JournalReplayStore {
    mem: MemoryReplayStore,
    log: Rc<RefCell<RejectLog>>,
    watermark: Seq,
}

impl JournalReplayStore {
    /// A store keeping `per_key` reports per key, logging rejects to `log`.
    pub fn new(per_key: usize, log: Rc<RefCell<RejectLog>>) -> JournalReplayStore {
        JournalReplayStore { mem: MemoryReplayStore::new(per_key), log, watermark: 0 }
    }
}

impl ReplayStore for JournalReplayStore {
    fn append(&mut self, key: KeyId, report: &ExecReport) {
        if report.flags & EXEC_GATEWAY != 0 {
            let e = RejectEntry { watermark: self.watermark, key, report: *report };
            self.log.borrow_mut().append(&LogEntry::Reject(e));
        } else {
            self.watermark = self.watermark.max(report.engine_seq);
        }
        self.mem.append(key, report);
    }
    fn last_seq(&self, key: KeyId) -> Seq {
        self.mem.last_seq(key)
    }
    fn first_seq(&self, key: KeyId) -> Seq {
        self.mem.first_seq(key)
    }
    fn get(&self, key: KeyId, seq: Seq) -> Option<ExecReport> {
        self.mem.get(key, seq)
    }
    fn record_follow(&mut self, key: KeyId, account: AccountId) {
        self.log.borrow_mut().append(&LogEntry::Follow { watermark: self.watermark, key, account });
    }
}

/// What the startup replay did.
#[derive(Clone, Copy, Debug, Default)]
pub struct RebuildStats {
    /// Journaled commands replayed.
    pub commands: u64,
    /// Engine events fed to the hub.
    pub events: u64,
    /// Gateway rejects spliced in from the log.
    pub rejects: u64,
    /// Admin follows applied from the log.
    pub follows: u64,
    /// Gateway rejects whose session sequence came out different from the one logged, and
    /// follows refused (configuration changed between runs, e.g. keys); 0 normally.
    pub mismatches: u64,
}

/// Replays `rec` through a fresh engine built from `cfg` and through `hub` (whose store must be
/// empty), splicing in the `log` entries. Returns the engine (state equal to the journal's) and
/// counts.
pub fn rebuild(
    rec: &Recovered,
    cfg: &EngineConfig,
    hub: &Hub,
    log: &[LogEntry],
) -> Result<(Engine, RebuildStats), String> {
    let mut engine = Engine::new(cfg).map_err(|e| e.to_string())?;
    let mut st = RebuildStats::default();
    let mut evs: Vec<Event> = Vec::with_capacity(64);
    let mut next = 0usize;
    let mut splice = |upto: Option<Seq>, st: &mut RebuildStats| {
        while let Some(e) = log.get(next) {
            if upto.is_some_and(|s| e.watermark() >= s) {
                break;
            }
            let mut h = hub.borrow_mut();
            match e {
                LogEntry::Reject(e) => {
                    let expect = h.last_seq(e.key) + 1;
                    if expect != e.report.session_seq {
                        st.mismatches += 1;
                    }
                    h.push_report(e.key, e.report);
                    st.rejects += 1;
                }
                LogEntry::Follow { key, account, .. } => {
                    // Err only if the keys changed between runs (the key is gone, or its limit).
                    if h.follow(*key, *account).is_err() {
                        st.mismatches += 1;
                    }
                    st.follows += 1;
                }
            }
            next += 1;
        }
    };
    for c in rec.commands() {
        let c = c.map_err(|e| e.to_string())?;
        if c.kind == CommandKind::New as u8 {
            // The id was used by the gateway before the command was journaled.
            let _ = hub.borrow_mut().use_order_id(c.account, c.order_id);
        }
        evs.clear();
        engine.handle(&c, &mut evs);
        st.commands += 1;
        for ev in &evs {
            splice(Some(ev.seq), &mut st);
            hub.handle_event(ev);
            st.events += 1;
        }
    }
    splice(None, &mut st);
    Ok((engine, st))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_protocol::ExecType;

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let dir = std::env::temp_dir().join(format!("tw-rejlog-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("log");
        let _ = std::fs::remove_file(&path);
        let e = LogEntry::Reject(RejectEntry {
            watermark: 5,
            key: 9,
            report: ExecReport { session_seq: 3, flags: EXEC_GATEWAY, ..ExecReport::empty(ExecType::Rejected) },
        });
        let f = LogEntry::Follow { watermark: 6, key: 9, account: 77 };
        {
            let (mut log, entries) = RejectLog::open(&path, true).unwrap();
            assert!(entries.is_empty());
            log.enable();
            log.append(&e);
            log.append(&f);
            // Buffered until the sync: nothing on disk yet.
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
            assert!(log.is_dirty());
            log.sync();
            assert!(!log.is_dirty());
        }
        // A torn third record.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&encode(&e)[..50]).unwrap();
        drop(file);
        let (_, entries) = RejectLog::open(&path, true).unwrap();
        assert_eq!(entries, vec![e, f]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * RECORD_LEN as u64);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
