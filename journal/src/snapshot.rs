//! Snapshot files: the whole engine state ([`EngineSnapshot`], serialised with rkyv) behind a
//! small checked header, written atomically next to the journal segments.
//!
//! File `snapshot-<last command sequence, 20 digits>.tws` in the journal directory:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `TWSNAPSH` |
//! | 8 | 2 | version (1) |
//! | 10 | 2 | header length (64) |
//! | 12 | 4 | reserved (0) |
//! | 16 | 8 | last command sequence the state includes |
//! | 24 | 8 | next event sequence |
//! | 32 | 8 | `state_hash()` of the engine snapshotted |
//! | 40 | 8 | payload length (bytes after the header) |
//! | 48 | 8 | created, ns since the Unix epoch (informational) |
//! | 56 | 4 | CRC32C of the payload |
//! | 60 | 4 | CRC32C of bytes 0..60 |
//!
//! The payload is the rkyv archive of the [`EngineSnapshot`] (validated with bytecheck when
//! read). A file is written as `<name>.tmp`, `fsync`ed, renamed to its name, and the directory is
//! `fsync`ed: a crash leaves either no file or the whole file under its final name (a stale
//! `.tmp` is ignored, and removed by the next recovery).

use crate::writer::sync_dir;
use crate::{log, now_ns, JournalError, Result};
use rkyv::rancor;
use rkyv::util::AlignedVec;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tickwire_core::snapshot::EngineSnapshot;
use tickwire_core::Seq;

/// First 8 bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"TWSNAPSH";
/// Snapshot format version. A reader refuses any other.
pub const SNAPSHOT_VERSION: u16 = 1;
/// Header size; the payload starts here.
pub const SNAPSHOT_HEADER_LEN: usize = 64;
/// File name extension of snapshot files.
pub const SNAPSHOT_EXT: &str = "tws";
/// Suffix of a snapshot being written.
pub const TEMP_SUFFIX: &str = ".tmp";

/// The decoded header of a snapshot file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Last command sequence included in the state (the journal replays from the next one).
    pub last_cmd_seq: Seq,
    /// Sequence the next event will get.
    pub next_event_seq: Seq,
    /// `state_hash()` of the engine that was snapshotted.
    pub state_hash: u64,
    /// Payload bytes after the header.
    pub payload_len: u64,
    /// Wall clock when written, ns since the Unix epoch.
    pub created_ns: u64,
    /// CRC32C of the payload.
    pub payload_crc: u32,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

impl SnapshotHeader {
    /// The 64 header bytes.
    pub fn encode(&self) -> [u8; SNAPSHOT_HEADER_LEN] {
        let mut b = [0u8; SNAPSHOT_HEADER_LEN];
        b[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
        b[8..10].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&(SNAPSHOT_HEADER_LEN as u16).to_le_bytes());
        b[16..24].copy_from_slice(&self.last_cmd_seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.next_event_seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.state_hash.to_le_bytes());
        b[40..48].copy_from_slice(&self.payload_len.to_le_bytes());
        b[48..56].copy_from_slice(&self.created_ns.to_le_bytes());
        b[56..60].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks (magic, length, version, header CRC) the start of `b`.
    pub fn decode(b: &[u8]) -> Result<SnapshotHeader, String> {
        if b.len() < SNAPSHOT_HEADER_LEN {
            return Err(format!("truncated header: {} of {SNAPSHOT_HEADER_LEN} bytes", b.len()));
        }
        if b[0..8] != SNAPSHOT_MAGIC {
            return Err("bad magic (not a tickwire snapshot)".into());
        }
        let stored = u32_at(b, 60);
        let computed = crc32c::crc32c(&b[0..60]);
        if stored != computed {
            return Err(format!("header CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"));
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != SNAPSHOT_VERSION {
            return Err(format!("unsupported snapshot version {version} (this build reads {SNAPSHOT_VERSION})"));
        }
        if u16::from_le_bytes([b[10], b[11]]) as usize != SNAPSHOT_HEADER_LEN {
            return Err("bad header length".into());
        }
        Ok(SnapshotHeader {
            last_cmd_seq: u64_at(b, 16),
            next_event_seq: u64_at(b, 24),
            state_hash: u64_at(b, 32),
            payload_len: u64_at(b, 40),
            created_ns: u64_at(b, 48),
            payload_crc: u32_at(b, 56),
        })
    }
}

/// Why a snapshot file cannot be used.
#[derive(Debug)]
pub enum SnapshotError {
    /// Reading it failed.
    Io(std::io::Error),
    /// It is not a valid snapshot: the reason (bad header, CRC, length, archive, fields).
    Invalid(String),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Io(e) => write!(f, "read failed: {e}"),
            SnapshotError::Invalid(s) => write!(f, "{s}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// The file name of the snapshot of state up to `last_cmd_seq`.
pub fn snapshot_file_name(last_cmd_seq: Seq) -> String {
    format!("snapshot-{last_cmd_seq:020}.{SNAPSHOT_EXT}")
}

/// Parses a snapshot file name (not a temp file); `None` if it is not one.
pub fn parse_snapshot_file_name(name: &str) -> Option<Seq> {
    let stem = name.strip_prefix("snapshot-")?.strip_suffix(SNAPSHOT_EXT)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Snapshot files of `dir` (by name; not verified), ascending by sequence. A missing directory
/// has none.
pub fn list_snapshots(dir: &Path) -> Result<Vec<(Seq, PathBuf)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(JournalError::io(dir, "read directory", e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| JournalError::io(dir, "read directory", e))?;
        if let Some(seq) = ent.file_name().to_str().and_then(parse_snapshot_file_name) {
            out.push((seq, ent.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Removes leftover `snapshot-*.tws.tmp` files (a crash between writing and renaming one).
/// Returns the files removed (each logged).
pub fn remove_temp_snapshots(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(JournalError::io(dir, "read directory", e)),
    };
    let mut removed = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| JournalError::io(dir, "read directory", e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.strip_suffix(TEMP_SUFFIX).and_then(parse_snapshot_file_name).is_some() {
            std::fs::remove_file(ent.path()).map_err(|e| JournalError::io(ent.path(), "remove", e))?;
            log(&format!("{}: unfinished snapshot (crash before its rename): removed", ent.path().display()));
            removed.push(ent.path());
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Serialises `snap` as a whole snapshot file's bytes (header + rkyv payload).
pub fn encode_snapshot(snap: &EngineSnapshot) -> Result<Vec<u8>> {
    let payload = rkyv::to_bytes::<rancor::Error>(snap)
        .map_err(|e| JournalError::Failed(format!("cannot serialise the snapshot: {e}")))?;
    let h = SnapshotHeader {
        last_cmd_seq: snap.last_cmd_seq,
        next_event_seq: snap.next_event_seq,
        state_hash: snap.state_hash,
        payload_len: payload.len() as u64,
        created_ns: now_ns(),
        payload_crc: crc32c::crc32c(&payload),
    };
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_LEN + payload.len());
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes and verifies a whole snapshot file's bytes: header, length, payload CRC, the rkyv
/// archive (bytecheck), and that the header agrees with the decoded state.
pub fn decode_snapshot(bytes: &[u8]) -> Result<(SnapshotHeader, EngineSnapshot), String> {
    let h = SnapshotHeader::decode(bytes)?;
    let payload = &bytes[SNAPSHOT_HEADER_LEN..];
    if payload.len() as u64 != h.payload_len {
        return Err(format!("payload is {} bytes, header says {}", payload.len(), h.payload_len));
    }
    let crc = crc32c::crc32c(payload);
    if crc != h.payload_crc {
        return Err(format!("payload CRC mismatch (stored {:#010x}, computed {crc:#010x})", h.payload_crc));
    }
    // rkyv reads from an aligned buffer.
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    let snap = rkyv::from_bytes::<EngineSnapshot, rancor::Error>(&aligned)
        .map_err(|e| format!("payload is not a valid snapshot archive: {e}"))?;
    if snap.last_cmd_seq != h.last_cmd_seq || snap.next_event_seq != h.next_event_seq || snap.state_hash != h.state_hash {
        return Err("header and payload disagree (sequences or state hash)".into());
    }
    Ok((h, snap))
}

/// Reads and verifies one snapshot file (see [`decode_snapshot`]); also checks that its name
/// matches its sequence.
pub fn read_snapshot(path: &Path) -> Result<(SnapshotHeader, EngineSnapshot), SnapshotError> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(SnapshotError::Io)?;
    let (h, snap) = decode_snapshot(&bytes).map_err(SnapshotError::Invalid)?;
    let named = path.file_name().and_then(|n| n.to_str()).and_then(parse_snapshot_file_name);
    if named.is_some_and(|s| s != h.last_cmd_seq) {
        return Err(SnapshotError::Invalid(format!(
            "file name says sequence {}, header says {}",
            named.unwrap_or(0),
            h.last_cmd_seq
        )));
    }
    Ok((h, snap))
}

/// A snapshot file that was written (and, from the snapshotter, verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The file.
    pub path: PathBuf,
    /// Last command sequence the state includes.
    pub last_cmd_seq: Seq,
    /// Resting orders in it.
    pub orders: u64,
    /// File size.
    pub bytes: u64,
    /// Engine state hash.
    pub state_hash: u64,
    /// Time to export the state from the (shadow) engine and serialise it.
    pub encode_time: Duration,
    /// Time to write, `fsync`, rename and `fsync` the directory.
    pub write_time: Duration,
    /// Time to read it back and verify it (zero if not verified).
    pub verify_time: Duration,
}

/// Writes `snap` into `dir` atomically: `<name>.tmp`, `fsync`, rename to
/// [`snapshot_file_name`], `fsync` of the directory. An existing snapshot of the same sequence is
/// replaced. Not verified: see [`verify_written`].
pub fn write_snapshot(dir: &Path, snap: &EngineSnapshot) -> Result<SnapshotInfo> {
    let t = Instant::now();
    let bytes = encode_snapshot(snap)?;
    let encode_time = t.elapsed();
    let t = Instant::now();
    let path = write_snapshot_bytes(dir, snap.last_cmd_seq, &bytes)?;
    Ok(SnapshotInfo {
        path,
        last_cmd_seq: snap.last_cmd_seq,
        orders: snap.orders.len() as u64,
        bytes: bytes.len() as u64,
        state_hash: snap.state_hash,
        encode_time,
        write_time: t.elapsed(),
        verify_time: Duration::ZERO,
    })
}

/// The I/O part of [`write_snapshot`]: `bytes` (from [`encode_snapshot`]) to `<name>.tmp`,
/// `fsync`, rename, directory `fsync`. Returns the final path.
pub fn write_snapshot_bytes(dir: &Path, last_cmd_seq: Seq, bytes: &[u8]) -> Result<PathBuf> {
    let name = snapshot_file_name(last_cmd_seq);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| JournalError::io(&tmp, "create snapshot", e))?;
    f.write_all(bytes).map_err(|e| JournalError::io(&tmp, "write snapshot", e))?;
    f.sync_all().map_err(|e| JournalError::io(&tmp, "fsync snapshot", e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| JournalError::io(&path, "rename snapshot", e))?;
    sync_dir(dir)?;
    Ok(path)
}

/// Reads a just-written snapshot back from its file and checks that it decodes (CRCs, archive)
/// to exactly `expected`. Fills `info.verify_time`.
pub fn verify_written(info: &mut SnapshotInfo, expected: &EngineSnapshot) -> Result<()> {
    let t = Instant::now();
    let (_, got) = read_snapshot(&info.path)
        .map_err(|e| JournalError::Failed(format!("{}: snapshot does not read back: {e}", info.path.display())))?;
    if got != *expected {
        return Err(JournalError::Failed(format!(
            "{}: snapshot read back differs from the state written",
            info.path.display()
        )));
    }
    info.verify_time = t.elapsed();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_core::event::CountingSink;
    use tickwire_core::{Command, Engine, EngineConfig, OrderType, Side};

    fn engine() -> Engine {
        let mut e = Engine::new(&EngineConfig::single_default()).unwrap();
        let mut sink = CountingSink::default();
        for i in 1..=200u64 {
            let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
            let px = if side == Side::Buy { 1000 - (i % 17) as i64 } else { 1001 + (i % 13) as i64 };
            let c = Command::new_order(1 + (i % 7) as u32, 1, i, side, OrderType::LimitGtc, Some(px), 1 + i % 5, None);
            e.handle(&c.with_seq(i, i), &mut sink);
        }
        e
    }

    #[test]
    fn round_trip_and_damage() {
        let e = engine();
        let snap = e.snapshot();
        let bytes = encode_snapshot(&snap).unwrap();
        let (h, back) = decode_snapshot(&bytes).unwrap();
        assert_eq!(back, snap);
        assert_eq!(h.last_cmd_seq, 200);
        assert_eq!(h.state_hash, e.state_hash());
        // Every single-byte flip and every truncation is refused.
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode_snapshot(&b).is_err(), "flip at {i} accepted");
        }
        for n in [0, 10, 63, 64, 65, bytes.len() - 1] {
            assert!(decode_snapshot(&bytes[..n]).is_err(), "cut at {n} accepted");
        }
    }

    #[test]
    fn names() {
        assert_eq!(snapshot_file_name(42), "snapshot-00000000000000000042.tws");
        assert_eq!(parse_snapshot_file_name("snapshot-00000000000000000042.tws"), Some(42));
        assert_eq!(parse_snapshot_file_name("snapshot-00000000000000000042.tws.tmp"), None);
        assert_eq!(parse_snapshot_file_name("snapshot-42.tws"), None);
    }
}
