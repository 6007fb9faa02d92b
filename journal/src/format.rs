//! The on-disk format, sans-IO: segment header and record codecs, and the scan of one segment's
//! bytes. Nothing here touches a file; `reader` and `writer` do the I/O and apply the recovery
//! policy. The byte-by-byte description is in `docs/journal.md`; the constants below are the
//! authority.
//!
//! All integers are little-endian. CRCs are CRC32C (Castagnoli).

use std::fmt;
use tickwire_core::{Command, Seq};

/// First 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TWJOURNL";
/// Format version written in the segment header. A reader refuses any other.
pub const FORMAT_VERSION: u16 = 1;
/// Segment header size in bytes; records start at this offset.
pub const HEADER_LEN: usize = 64;
/// Command payload size (a [`Command`]'s bytes).
pub const PAYLOAD_LEN: usize = 64;
/// Record size: `len u32, crc u32, seq u64, ts_ns u64, payload [64]`.
pub const RECORD_LEN: usize = 24 + PAYLOAD_LEN;
/// File name extension of segment files (`<first_seq, 20 digits>.twj`).
pub const SEGMENT_EXT: &str = "twj";

/// Why bytes do not decode as a header or record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The header does not start with [`SEGMENT_MAGIC`]: not a Tickwire journal segment.
    BadMagic,
    /// A segment of a format version this build does not read.
    BadVersion {
        /// Version found in the header.
        found: u16,
    },
    /// The header's sizes (header, record, payload length) are not this format's.
    BadLayout,
    /// Fewer bytes than a whole header or record.
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// A record's length field is not [`PAYLOAD_LEN`].
    BadLength {
        /// Length found.
        found: u32,
    },
    /// Stored and computed CRC32C differ.
    BadCrc {
        /// CRC stored in the bytes.
        stored: u32,
        /// CRC computed over them.
        computed: u32,
    },
    /// A record's sequence is not the one expected here (or disagrees with its payload).
    SequenceGap {
        /// Sequence expected.
        expected: Seq,
        /// Sequence found.
        found: Seq,
    },
    /// A header field is out of range (e.g. first sequence 0).
    BadField(&'static str),
    /// Only zero bytes: preallocated space never written (not an error at the end of data).
    Empty,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::BadMagic => write!(f, "bad magic (not a tickwire journal segment)"),
            DecodeError::BadVersion { found } => {
                write!(f, "unsupported journal format version {found} (this build reads {FORMAT_VERSION})")
            }
            DecodeError::BadLayout => write!(f, "header sizes do not match this format"),
            DecodeError::Truncated { need, have } => write!(f, "truncated: {have} of {need} bytes"),
            DecodeError::BadLength { found } => write!(f, "bad record length {found} (expected {PAYLOAD_LEN})"),
            DecodeError::BadCrc { stored, computed } => {
                write!(f, "CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
            DecodeError::SequenceGap { expected, found } => {
                write!(f, "sequence gap: expected {expected}, found {found}")
            }
            DecodeError::BadField(what) => write!(f, "bad header field: {what}"),
            DecodeError::Empty => write!(f, "empty (zero bytes)"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// The 64-byte header at the start of every segment file.
///
/// Layout: magic `[0..8)`, version u16 `[8..10)`, header_len u16 `[10..12)`, record_len u16
/// `[12..14)`, payload_len u16 `[14..16)`, first_seq u64 `[16..24)`, created_ns u64 `[24..32)`,
/// segment_bytes u64 `[32..40)`, reserved zeros `[40..60)`, CRC32C of `[0..60)` at `[60..64)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Sequence of the segment's first record (the next sequence when it was created). >= 1.
    pub first_seq: Seq,
    /// Wall-clock time the segment was created (ns since the Unix epoch; informational).
    pub created_ns: u64,
    /// Size the file was preallocated to (informational; the file may be shorter after a trim).
    pub segment_bytes: u64,
}

impl SegmentHeader {
    /// Writes the header's 64 bytes.
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        out.fill(0);
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        out[12..14].copy_from_slice(&(RECORD_LEN as u16).to_le_bytes());
        out[14..16].copy_from_slice(&(PAYLOAD_LEN as u16).to_le_bytes());
        out[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.created_ns.to_le_bytes());
        out[32..40].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a header from the start of `b`. Checks, in this order: magic (on whatever prefix
    /// is present), length, version, CRC, sizes, fields.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, DecodeError> {
        let m = b.len().min(8);
        if b[..m] != SEGMENT_MAGIC[..m] {
            return Err(DecodeError::BadMagic);
        }
        if b.len() < HEADER_LEN {
            return Err(DecodeError::Truncated { need: HEADER_LEN, have: b.len() });
        }
        let version = u16_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(DecodeError::BadVersion { found: version });
        }
        let stored = u32_at(b, 60);
        let computed = crc32c::crc32c(&b[0..60]);
        if stored != computed {
            return Err(DecodeError::BadCrc { stored, computed });
        }
        if u16_at(b, 10) as usize != HEADER_LEN
            || u16_at(b, 12) as usize != RECORD_LEN
            || u16_at(b, 14) as usize != PAYLOAD_LEN
        {
            return Err(DecodeError::BadLayout);
        }
        let h = SegmentHeader { first_seq: u64_at(b, 16), created_ns: u64_at(b, 24), segment_bytes: u64_at(b, 32) };
        if h.first_seq == 0 {
            return Err(DecodeError::BadField("first_seq is 0"));
        }
        Ok(h)
    }
}

/// One decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Command sequence (equal to `cmd.seq`).
    pub seq: Seq,
    /// Wall-clock time the record was appended to the journal (ns since the Unix epoch).
    pub ts_ns: u64,
    /// The command, as it entered the engine's sequence.
    pub cmd: Command,
}

fn record_crc(b: &[u8]) -> u32 {
    // Covers the length field and everything after the CRC field.
    crc32c::crc32c_append(crc32c::crc32c(&b[0..4]), &b[8..RECORD_LEN])
}

/// Encodes one record (`cmd.seq` is the record's sequence; `ts_ns` the journal time).
///
/// Layout: len u32 = 64 `[0..4)`, CRC32C u32 `[4..8)` over `[0..4) ++ [8..88)`, seq u64
/// `[8..16)`, ts_ns u64 `[16..24)`, the command's 64 bytes `[24..88)`.
pub fn encode_record(cmd: &Command, ts_ns: u64, out: &mut [u8; RECORD_LEN]) {
    out[0..4].copy_from_slice(&(PAYLOAD_LEN as u32).to_le_bytes());
    out[8..16].copy_from_slice(&cmd.seq.to_le_bytes());
    out[16..24].copy_from_slice(&ts_ns.to_le_bytes());
    out[24..RECORD_LEN].copy_from_slice(cmd.as_bytes());
    let crc = record_crc(out);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends the records of `cmds` (all with journal time `ts_ns`) to `out`.
pub fn encode_records(cmds: &[Command], ts_ns: u64, out: &mut Vec<u8>) {
    let mut rec = [0u8; RECORD_LEN];
    out.reserve(cmds.len() * RECORD_LEN);
    for c in cmds {
        encode_record(c, ts_ns, &mut rec);
        out.extend_from_slice(&rec);
    }
}

/// Decodes one record from the start of `b` (at most [`RECORD_LEN`] bytes are looked at).
///
/// Errors: `Empty` (all looked-at bytes zero: never written), `Truncated` (fewer than
/// `RECORD_LEN` bytes, not all zero), `BadLength`, `BadCrc`, `SequenceGap` (header sequence and
/// payload sequence disagree under a valid CRC: written by something else than this writer).
pub fn decode_record(b: &[u8]) -> Result<Record, DecodeError> {
    let b = &b[..b.len().min(RECORD_LEN)];
    if b.iter().all(|&x| x == 0) {
        return Err(DecodeError::Empty);
    }
    if b.len() < RECORD_LEN {
        return Err(DecodeError::Truncated { need: RECORD_LEN, have: b.len() });
    }
    let len = u32_at(b, 0);
    if len as usize != PAYLOAD_LEN {
        return Err(DecodeError::BadLength { found: len });
    }
    let stored = u32_at(b, 4);
    let computed = record_crc(b);
    if stored != computed {
        return Err(DecodeError::BadCrc { stored, computed });
    }
    let seq = u64_at(b, 8);
    let cmd = Command::from_bytes(b[24..RECORD_LEN].try_into().expect("64 bytes"));
    if cmd.seq != seq {
        return Err(DecodeError::SequenceGap { expected: seq, found: cmd.seq });
    }
    Ok(Record { seq, ts_ns: u64_at(b, 16), cmd })
}

/// Offset of record slot `i` in a segment.
#[inline]
pub const fn slot_offset(i: u64) -> u64 {
    HEADER_LEN as u64 + i * RECORD_LEN as u64
}

/// How many records fit in a segment of `segment_bytes` (at least 1).
pub const fn records_per_segment(segment_bytes: u64) -> u64 {
    let n = segment_bytes.saturating_sub(HEADER_LEN as u64) / RECORD_LEN as u64;
    if n == 0 {
        1
    } else {
        n
    }
}

/// What stopped the scan of a segment before the end of its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanStop {
    /// Offset (in the segment) of the first slot that is not a valid next record.
    pub offset: u64,
    /// Why it is not.
    pub error: DecodeError,
}

/// The result of scanning one segment's bytes ([`scan_segment`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// The decoded header.
    pub header: SegmentHeader,
    /// Valid records, in order, from the header's `first_seq`.
    pub records: u64,
    /// Offset just past the last valid record (= `HEADER_LEN` when there is none).
    pub data_end: u64,
    /// Journal time of the first and last valid records.
    pub ts_range: Option<(u64, u64)>,
    /// Set when the scan stopped at a slot that is not a valid next record. An `Empty` stop with
    /// nothing valid after it is the normal end of data in a preallocated file.
    pub stop: Option<ScanStop>,
    /// Offset of the first slot after the stop that holds a CRC-valid record (any sequence):
    /// evidence that the damage is not a torn tail.
    pub valid_after: Option<u64>,
    /// Bytes from `data_end` up to the last non-zero byte: written bytes that are not whole
    /// valid records (0 for a clean end).
    pub garbage_bytes: u64,
}

impl SegmentScan {
    /// Sequence of the last valid record, if any.
    pub fn last_seq(&self) -> Option<Seq> {
        (self.records > 0).then(|| self.header.first_seq + self.records - 1)
    }

    /// Whether the segment ends cleanly: valid records, then only zeros (or the end of bytes).
    pub fn is_clean(&self) -> bool {
        self.garbage_bytes == 0 && self.valid_after.is_none()
    }
}

/// Scans a whole segment held in memory: header, then records while each is valid and has the
/// next sequence. Fails only if the header does not decode.
pub fn scan_segment(bytes: &[u8]) -> Result<SegmentScan, DecodeError> {
    let header = SegmentHeader::decode(bytes)?;
    let mut off = HEADER_LEN;
    let mut expected = header.first_seq;
    let mut records = 0u64;
    let mut ts_range: Option<(u64, u64)> = None;
    let mut stop = None;
    while off < bytes.len() {
        match decode_record(&bytes[off..]) {
            Ok(r) if r.seq == expected => {
                records += 1;
                expected += 1;
                ts_range = Some(ts_range.map_or((r.ts_ns, r.ts_ns), |(a, _)| (a, r.ts_ns)));
                off += RECORD_LEN;
            }
            Ok(r) => {
                stop = Some(ScanStop { offset: off as u64, error: DecodeError::SequenceGap { expected, found: r.seq } });
                break;
            }
            Err(error) => {
                stop = Some(ScanStop { offset: off as u64, error });
                break;
            }
        }
    }
    let data_end = off;
    let mut valid_after = None;
    if stop.is_some() {
        let mut o = data_end + RECORD_LEN;
        while o + RECORD_LEN <= bytes.len() {
            if decode_record(&bytes[o..]).is_ok() {
                valid_after = Some(o as u64);
                break;
            }
            o += RECORD_LEN;
        }
    }
    let last_nonzero = bytes.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
    let garbage_bytes = last_nonzero.saturating_sub(data_end) as u64;
    // An Empty stop followed by nothing is the normal end of a preallocated segment.
    if matches!(stop, Some(ScanStop { error: DecodeError::Empty, .. })) && garbage_bytes == 0 {
        stop = None;
    }
    Ok(SegmentScan { header, records, data_end: data_end as u64, ts_range, stop, valid_after, garbage_bytes })
}

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_file_name(first_seq: Seq) -> String {
    format!("{first_seq:020}.{SEGMENT_EXT}")
}

/// Parses a segment file name; `None` if the name is not one.
pub fn parse_segment_file_name(name: &str) -> Option<Seq> {
    let stem = name.strip_suffix(SEGMENT_EXT)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_core::{OrderType, Side};

    fn cmd(seq: Seq) -> Command {
        Command::new_order(7, 1, seq * 10, Side::Buy, OrderType::LimitGtc, Some(100 + seq as i64), 5, None)
            .with_seq(seq, 1_000 + seq)
    }

    #[test]
    fn header_roundtrip_and_errors() {
        let h = SegmentHeader { first_seq: 42, created_ns: 7, segment_bytes: 1 << 20 };
        let mut b = [0u8; HEADER_LEN];
        h.encode(&mut b);
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        assert_eq!(SegmentHeader::decode(&b[..10]), Err(DecodeError::Truncated { need: 64, have: 10 }));
        assert_eq!(SegmentHeader::decode(b"PK\x03\x04zipfile"), Err(DecodeError::BadMagic));
        assert_eq!(SegmentHeader::decode(&[0u8; 64]), Err(DecodeError::BadMagic));
        let mut v = b;
        v[8] = 9;
        assert_eq!(SegmentHeader::decode(&v), Err(DecodeError::BadVersion { found: 9 }));
        let mut c = b;
        c[20] ^= 1;
        assert!(matches!(SegmentHeader::decode(&c), Err(DecodeError::BadCrc { .. })));
        let z = SegmentHeader { first_seq: 0, ..h };
        z.encode(&mut b);
        assert_eq!(SegmentHeader::decode(&b), Err(DecodeError::BadField("first_seq is 0")));
    }

    #[test]
    fn record_roundtrip_and_errors() {
        let c = cmd(5);
        let mut b = [0u8; RECORD_LEN];
        encode_record(&c, 99, &mut b);
        assert_eq!(decode_record(&b), Ok(Record { seq: 5, ts_ns: 99, cmd: c }));
        assert_eq!(decode_record(&[0u8; RECORD_LEN]), Err(DecodeError::Empty));
        assert_eq!(decode_record(&[0u8; 3]), Err(DecodeError::Empty));
        assert_eq!(decode_record(&b[..50]), Err(DecodeError::Truncated { need: RECORD_LEN, have: 50 }));
        for i in 0..RECORD_LEN {
            let mut x = b;
            x[i] ^= 0x40;
            let e = decode_record(&x).unwrap_err();
            if i < 4 {
                assert!(matches!(e, DecodeError::BadLength { .. }), "{i}: {e:?}");
            } else {
                assert!(matches!(e, DecodeError::BadCrc { .. }), "{i}: {e:?}");
            }
        }
    }

    #[test]
    fn scan_clean_torn_and_holes() {
        let mut seg = vec![0u8; HEADER_LEN];
        let mut hb = [0u8; HEADER_LEN];
        SegmentHeader { first_seq: 3, created_ns: 0, segment_bytes: 0 }.encode(&mut hb);
        seg.copy_from_slice(&hb);
        let cmds: Vec<Command> = (3..13).map(cmd).collect();
        encode_records(&cmds, 1, &mut seg);
        let full = seg.len();
        seg.resize(full + 1000, 0); // preallocated zeros
        let s = scan_segment(&seg).unwrap();
        assert_eq!((s.records, s.data_end, s.last_seq(), s.stop, s.garbage_bytes), (10, full as u64, Some(12), None, 0));
        assert!(s.is_clean());

        // torn: cut inside the last record (its last 16 bytes are zeros anyway: qty 5, reserved)
        let cut = full - 40;
        let mut t = seg.clone();
        t[cut..].fill(0);
        let s = scan_segment(&t).unwrap();
        assert_eq!(s.records, 9);
        assert!(s.garbage_bytes > 0 && s.garbage_bytes <= (cut - (full - RECORD_LEN)) as u64);
        assert!(matches!(s.stop.unwrap().error, DecodeError::BadCrc { .. }));
        assert_eq!(s.valid_after, None);
        let s = scan_segment(&seg[..cut]).unwrap();
        assert!(matches!(s.stop.unwrap().error, DecodeError::Truncated { .. }));

        // a hole before valid records
        let mut h = seg.clone();
        h[HEADER_LEN + RECORD_LEN..HEADER_LEN + 2 * RECORD_LEN].fill(0);
        let s = scan_segment(&h).unwrap();
        assert_eq!(s.records, 1);
        assert_eq!(s.stop.unwrap().error, DecodeError::Empty);
        assert_eq!(s.valid_after, Some((HEADER_LEN + 2 * RECORD_LEN) as u64));
    }

    #[test]
    fn file_names() {
        assert_eq!(segment_file_name(1), "00000000000000000001.twj");
        assert_eq!(parse_segment_file_name("00000000000000000001.twj"), Some(1));
        assert_eq!(parse_segment_file_name("1.twj"), None);
        assert_eq!(parse_segment_file_name("00000000000000000001.txt"), None);
    }
}
