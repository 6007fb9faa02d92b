//! The client side of the protocol for one instrument: rebuild the book from a Snapshot and the
//! messages after it, checking that sequences have no gap and that every checksum matches.

use super::book::MdBook;
use super::ServerMsg;
use tickwire_core::Seq;

/// What went wrong while applying a message. After an error the instrument is out of sync: the
/// client should send Resume(last_seq) (or Subscribe again) and wait for the Snapshot or replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncError {
    /// A sequenced message arrived before any Snapshot.
    NoSnapshot,
    /// The message does not start at `expected`.
    Gap {
        /// Sequence that should have come next.
        expected: Seq,
        /// First sequence of the message received.
        got: Seq,
    },
    /// The book's checksum after the message differs from the message's.
    Checksum {
        /// Sequence (last of the batch, or the snapshot's).
        seq: Seq,
        /// Checksum carried by the message.
        expected: u32,
        /// Checksum of the local book.
        got: u32,
    },
}

/// What a message did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The book was (re)loaded from a Snapshot.
    Snapshot,
    /// A sequenced message was applied.
    Update,
    /// The message was older than the book (duplicate after a resume) and was skipped.
    Stale,
    /// The message is not about the book's sequence (Heartbeat, Error, another instrument).
    Ignored,
}

/// Book and sequence of one instrument on the client side.
#[derive(Clone, Debug, Default)]
pub struct InstrumentSync {
    /// The local book.
    pub book: MdBook,
    /// Last sequence applied; `None` until a Snapshot (and again after an error).
    pub seq: Option<Seq>,
    /// Last sequence applied before the last error (what to Resume from).
    pub last_good: Option<Seq>,
}

impl InstrumentSync {
    /// A fresh, unsynchronised state.
    pub fn new() -> InstrumentSync {
        InstrumentSync::default()
    }

    /// Applies one message of this instrument. On error the state becomes unsynchronised
    /// (`seq` = None) and the book should not be trusted until the next Snapshot or replay.
    pub fn apply(&mut self, msg: &ServerMsg<'_>) -> Result<Applied, SyncError> {
        if let ServerMsg::Snapshot(s) = msg {
            self.book.load(s.bids, s.asks, s.halted);
            self.seq = Some(s.seq);
            self.last_good = Some(s.seq);
            let got = self.book.crc();
            if got != s.crc {
                self.seq = None;
                return Err(SyncError::Checksum { seq: s.seq, expected: s.crc, got });
            }
            return Ok(Applied::Snapshot);
        }
        if matches!(msg, ServerMsg::Candle(_)) {
            return Ok(Applied::Ignored); // candles have their own sequence (channel CH_CANDLES)
        }
        let Some((first, last)) = msg.seq_range() else { return Ok(Applied::Ignored) };
        let Some(cur) = self.seq else { return Err(SyncError::NoSnapshot) };
        if last <= cur {
            return Ok(Applied::Stale);
        }
        if first != cur + 1 {
            self.seq = None;
            return Err(SyncError::Gap { expected: cur + 1, got: first });
        }
        match msg {
            ServerMsg::DeltaBatch(d) => {
                self.book.apply_all(d.updates);
                let got = self.book.crc();
                if got != d.crc {
                    self.seq = None;
                    return Err(SyncError::Checksum { seq: last, expected: d.crc, got });
                }
            }
            ServerMsg::Status(s) => self.book.halted = s.halted,
            _ => {}
        }
        self.seq = Some(last);
        self.last_good = Some(last);
        Ok(Applied::Update)
    }
}
