//! Where a shard's engine events come from: in-process (a channel fed by the engine's outbound
//! consumer) or another process's shared-memory ring (a lossy reader that detects being lapped),
//! and how a shard reading the ring resynchronises from a book image
//! (`tickwire_core::ring::book_image`) after it was lapped or when it starts late.
//!
//! # Resync
//!
//! - Engine side: an [`ImageFollower`] keeps every instrument's aggregated levels from the event
//!   stream (lossless: an in-process channel fed by the engine's outbound consumer, see
//!   [`ImagePublisher::spawn_channel`]) and publishes a [`BookImageWriter`] image at most every
//!   `min_interval` and whenever it goes idle. It is not a gating consumer of the outbound ring and
//!   the image writer never waits for readers, so the engine never waits for it.
//! - Shard side: [`ShmSource`] attaches to the image next to the ring ([`image_path_for`]). At
//!   start, and whenever it is lapped, it copies the image (engine sequence S), checks that S + 1
//!   is still in the ring (else it waits for a newer image), seeks its reader to S + 1 and hands
//!   the hub the image *in-band*: a block of resync records (events of the private kind
//!   [`RESYNC_KIND`], never produced by an engine) before the events from S + 1. The hub applies
//!   the block with [`crate::Hub::reset_from_image`] when its last record arrives, so the shard
//!   loop needs no extra call. A block is never split across polls.

use crate::sys::Notifier;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tickwire_core::engine::Level;
use tickwire_core::event::EV_HALTED;
use tickwire_core::ring::book_image::{BookImage, BookImageReader, BookImageWriter, ImageBook, ImageReadError, DEFAULT_DEPTH};
use tickwire_core::ring::{LossyReader, RingError};
use tickwire_core::{Event, EventView, InstrumentId, Seq, Side};
use tickwire_protocol::md::book::MdBook;
use tickwire_protocol::md::LevelUpdate;

/// A stream of engine events, in engine sequence order.
pub trait EventSource: Send {
    /// Appends up to `max` available events to `out`; returns how many. Never blocks.
    fn poll(&mut self, out: &mut Vec<Event>, max: usize) -> usize;
    /// `None` if the source wakes the shard itself (through the notifier it was given), else how
    /// often the shard must poll it.
    fn poll_interval(&self) -> Option<Duration>;
    /// Receives the shard's notifier once, before the first poll.
    fn set_notifier(&mut self, _n: Notifier) {}
    /// Whether no more events will ever come (the producer is gone).
    fn is_closed(&self) -> bool {
        false
    }
}

/// The producer end of an in-process source: cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct FeedSender {
    tx: Sender<Vec<Event>>,
    notifier: Arc<OnceLock<Notifier>>,
}

impl FeedSender {
    /// Hands a batch of events (in engine order) to the shard and wakes it. Returns false if the
    /// shard is gone.
    pub fn send(&self, events: &[Event]) -> bool {
        if events.is_empty() {
            return true;
        }
        let ok = self.tx.send(events.to_vec()).is_ok();
        if let Some(n) = self.notifier.get() {
            n.notify();
        }
        ok
    }
}

/// The shard end of an in-process source.
pub struct ChannelSource {
    rx: Receiver<Vec<Event>>,
    notifier: Arc<OnceLock<Notifier>>,
    /// A batch partly handed out (when `max` cut it).
    carry: Vec<Event>,
    carry_pos: usize,
    closed: bool,
}

/// An unbounded in-process event channel.
pub fn channel() -> (FeedSender, ChannelSource) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let notifier = Arc::new(OnceLock::new());
    (
        FeedSender { tx, notifier: notifier.clone() },
        ChannelSource { rx, notifier, carry: Vec::new(), carry_pos: 0, closed: false },
    )
}

impl EventSource for ChannelSource {
    fn poll(&mut self, out: &mut Vec<Event>, max: usize) -> usize {
        let start = out.len();
        while out.len() - start < max {
            if self.carry_pos < self.carry.len() {
                let n = (max - (out.len() - start)).min(self.carry.len() - self.carry_pos);
                out.extend_from_slice(&self.carry[self.carry_pos..self.carry_pos + n]);
                self.carry_pos += n;
                continue;
            }
            match self.rx.try_recv() {
                Ok(b) => {
                    self.carry = b;
                    self.carry_pos = 0;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    break;
                }
            }
        }
        out.len() - start
    }
    fn poll_interval(&self) -> Option<Duration> {
        None
    }
    fn set_notifier(&mut self, n: Notifier) {
        let _ = self.notifier.set(n);
    }
    fn is_closed(&self) -> bool {
        self.closed && self.carry_pos >= self.carry.len()
    }
}

/// Reads the engine's outbound ring in shared memory (e.g. `/dev/shm/tickwire.events`) without
/// ever holding back the engine. Without a book image, being lapped loses events: counted in
/// `lapped` and seen by the hub as an engine sequence gap. With one (see the module docs), the
/// shard re-seeds its books from the image at start and after every lap.
pub struct ShmSource {
    reader: LossyReader<Event>,
    /// Times the reader was lapped.
    pub lapped: u64,
    /// Times the books were re-seeded from the book image (including the one at start).
    pub resyncs: u64,
    /// Resync attempts that found no usable image yet (not published, being rewritten, or older
    /// than the ring's oldest event); retried at the next poll.
    pub image_waits: u64,
    /// Times the image was unusable (its writer lost events): the reader then went on with a gap.
    pub image_unusable: u64,
    interval: Duration,
    image: Option<BookImageReader>,
    img: BookImage,
    need_image: bool,
}

/// Where the book image of the ring at `ring` lives: the same path with `.image` appended.
pub fn image_path_for(ring: &Path) -> PathBuf {
    let mut s = ring.as_os_str().to_os_string();
    s.push(".image");
    PathBuf::from(s)
}

impl ShmSource {
    /// Attaches read-only to the ring file, and to its book image ([`image_path_for`]) if that
    /// exists and was written by the ring's writer process. Without an image it starts at the
    /// oldest event still in the ring; with one, at the image's sequence.
    pub fn open(path: &Path, interval: Duration) -> Result<ShmSource, RingError> {
        let reader = LossyReader::open(path)?;
        let image = BookImageReader::open(&image_path_for(path)).ok().filter(|i| i.writer_pid() == reader.writer_pid());
        Ok(ShmSource::from_reader(reader, image, interval))
    }

    /// Attaches to the ring and to the book image at `image` (`None`: no image).
    pub fn open_with_image(path: &Path, image: Option<&Path>, interval: Duration) -> Result<ShmSource, RingError> {
        let reader = LossyReader::open(path)?;
        let image = image.map(BookImageReader::open).transpose()?;
        Ok(ShmSource::from_reader(reader, image, interval))
    }

    /// A source over an existing reader (e.g. `Pipeline::event_reader`), with an optional image.
    pub fn from_reader(reader: LossyReader<Event>, image: Option<BookImageReader>, interval: Duration) -> ShmSource {
        let need_image = image.is_some();
        ShmSource {
            reader,
            lapped: 0,
            resyncs: 0,
            image_waits: 0,
            image_unusable: 0,
            interval,
            image,
            img: BookImage::default(),
            need_image,
        }
    }

    /// The first engine sequence this reader will return.
    pub fn next_seq(&self) -> Seq {
        self.reader.next_seq()
    }

    /// Whether a book image is attached.
    pub fn has_image(&self) -> bool {
        self.image.is_some()
    }

    /// Tries to load the image and move the reader to the event after it; on success the resync
    /// block is appended to `out`. False: no usable image now (retry later).
    fn try_resync(&mut self, out: &mut Vec<Event>) -> bool {
        let Some(image) = &self.image else {
            self.need_image = false;
            return true;
        };
        match image.read(&mut self.img, 16) {
            Ok(()) => {}
            Err(ImageReadError::Unusable) => {
                // The image's writer lost events: go on from where the reader is, with a gap.
                self.image_unusable += 1;
                self.need_image = false;
                return true;
            }
            Err(ImageReadError::NotYet | ImageReadError::Busy) => {
                self.image_waits += 1;
                return false;
            }
        }
        let s = self.img.engine_seq;
        // S + 1 must still be in the ring (else wait for a newer image), and the image must not
        // be ahead of the ring (it would be another run's).
        if s + 1 < self.reader.oldest_available() || s > self.reader.published() {
            self.image_waits += 1;
            return false;
        }
        self.reader.seek(s + 1);
        push_resync_block(out, &self.img);
        self.need_image = false;
        self.resyncs += 1;
        true
    }
}

impl EventSource for ShmSource {
    /// May return more than `max` events when a resync block is handed out (never split).
    fn poll(&mut self, out: &mut Vec<Event>, max: usize) -> usize {
        let start = out.len();
        let mut resyncs = 0;
        loop {
            if self.need_image {
                // Bounded: a writer lapping us again right after each seek must not keep us here.
                if resyncs == 3 || !self.try_resync(out) {
                    break;
                }
                resyncs += 1;
            }
            let want = max.saturating_sub(out.len() - start);
            if want == 0 {
                break;
            }
            match self.reader.poll(want, |e, _, _| out.push(*e)) {
                Ok(_) => break,
                Err(_) => {
                    self.lapped += 1;
                    self.need_image = self.image.is_some();
                }
            }
        }
        out.len() - start
    }
    fn poll_interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
    fn is_closed(&self) -> bool {
        self.reader.is_writer_closed() && self.reader.published() < self.reader.next_seq()
    }
}

// ---- in-band resync records -------------------------------------------------------------------

/// `Event::kind` of the resync records a [`ShmSource`] puts before the events that follow a book
/// image (not an `EventKind`: engines never produce it). Every record has `seq` = the image's
/// engine sequence S; `reason` tells which record it is:
/// - 0 begin: `qty` = number of instruments;
/// - 1 book: `instrument`, `flags` bit `EV_HALTED` (halted) and bit 1 (truncated), `qty` bid
///   levels, `aux64` ask levels, whose level records follow;
/// - 2 level: `instrument`, `side`, `price`, `qty`, `aux32` = orders;
/// - 3 end: the hub applies the image.
pub const RESYNC_KIND: u8 = 0xF0;
const RS_BEGIN: u8 = 0;
const RS_BOOK: u8 = 1;
const RS_LEVEL: u8 = 2;
const RS_END: u8 = 3;
const RS_TRUNCATED: u8 = 2;

fn push_resync_block(out: &mut Vec<Event>, img: &BookImage) {
    let rec = |reason: u8, instrument: InstrumentId| Event {
        seq: img.engine_seq,
        kind: RESYNC_KIND,
        reason,
        instrument,
        ..Event::default()
    };
    out.push(Event { qty: img.books.len() as u64, ..rec(RS_BEGIN, 0) });
    for b in &img.books {
        let flags = if b.halted { EV_HALTED } else { 0 } | if b.truncated { RS_TRUNCATED } else { 0 };
        out.push(Event { flags, qty: b.bids.len() as u64, aux64: b.asks.len() as u64, ..rec(RS_BOOK, b.instrument) });
        for (side, levels) in [(Side::Buy, &b.bids), (Side::Sell, &b.asks)] {
            for l in levels {
                out.push(Event {
                    side: side as u8,
                    price: l.price,
                    qty: l.qty,
                    aux32: l.orders,
                    ..rec(RS_LEVEL, b.instrument)
                });
            }
        }
    }
    out.push(rec(RS_END, 0));
}

/// Rebuilds an image from resync records (in the hub).
#[derive(Default)]
pub(crate) struct ResyncAssembler {
    active: bool,
    seq: Seq,
    books: Vec<ImageBook>,
}

impl ResyncAssembler {
    /// Takes one record; `Some(S)` when an image at engine sequence S is complete (then
    /// [`ResyncAssembler::take_books`]). A record out of place drops the image being assembled.
    pub(crate) fn on_record(&mut self, ev: &Event) -> Option<Seq> {
        match ev.reason {
            RS_BEGIN => {
                self.active = true;
                self.seq = ev.seq;
                self.books.clear();
            }
            RS_BOOK if self.active && ev.seq == self.seq => self.books.push(ImageBook {
                instrument: ev.instrument,
                halted: ev.flags & EV_HALTED != 0,
                truncated: ev.flags & RS_TRUNCATED != 0,
                bids: Vec::new(),
                asks: Vec::new(),
            }),
            RS_LEVEL if self.active && ev.seq == self.seq => {
                let level = Level { price: ev.price, qty: ev.qty, orders: ev.aux32 };
                match (self.books.last_mut(), Side::from_u8(ev.side)) {
                    (Some(b), Some(Side::Buy)) if b.instrument == ev.instrument => b.bids.push(level),
                    (Some(b), Some(Side::Sell)) if b.instrument == ev.instrument => b.asks.push(level),
                    _ => self.abandon(),
                }
            }
            RS_END if self.active && ev.seq == self.seq => {
                self.active = false;
                return Some(self.seq);
            }
            _ => self.abandon(),
        }
        None
    }

    fn abandon(&mut self) {
        self.active = false;
        self.books.clear();
    }

    /// The books of the image just completed.
    pub(crate) fn take_books(&mut self) -> Vec<ImageBook> {
        std::mem::take(&mut self.books)
    }

    /// Gives the books' allocation back for the next image.
    pub(crate) fn recycle(&mut self, mut books: Vec<ImageBook>) {
        books.clear();
        self.books = books;
    }
}

// ---- engine side: the image publisher ---------------------------------------------------------

/// Keeps every instrument's aggregated levels from the engine's events (in order, none missing)
/// and writes them as book images. Sans-IO: [`ImagePublisher`] runs one on a thread.
pub struct ImageFollower {
    writer: BookImageWriter,
    books: Vec<(InstrumentId, MdBook)>,
    index: HashMap<InstrumentId, usize>,
    last_seq: Seq,
    changed: bool,
    broken: bool,
}

impl ImageFollower {
    /// Creates the image file at `path` (e.g. [`image_path_for`] of the outbound ring) for the
    /// seed's instruments, `depth` levels per side, and publishes the seed as its first image.
    /// The seed must be the engine's state before the first event this follower will be given
    /// (`crate::seed_from_engine` before the pipeline starts).
    pub fn create(path: &Path, seed: &crate::Seed, depth: usize) -> Result<ImageFollower, RingError> {
        let writer = BookImageWriter::create(path, seed.books.len().max(1), depth)?;
        let mut f = ImageFollower {
            writer,
            books: Vec::with_capacity(seed.books.len()),
            index: HashMap::new(),
            last_seq: seed.engine_seq,
            changed: true,
            broken: false,
        };
        for (id, bids, asks, halted) in &seed.books {
            let mut b = MdBook::new();
            for (side, ls) in [(Side::Buy, bids), (Side::Sell, asks)] {
                for l in ls {
                    b.apply(&LevelUpdate { side, price: l.price, qty: l.qty, orders: l.orders });
                }
            }
            b.halted = *halted;
            f.index.insert(*id, f.books.len());
            f.books.push((*id, b));
        }
        f.publish();
        Ok(f)
    }

    /// Applies events in engine order. Duplicates are skipped; a gap (events lost: this follower
    /// was fed by a lossy path) marks the image stale for good, so shards stop trusting it.
    pub fn apply(&mut self, evs: &[Event]) {
        for ev in evs {
            if self.broken || ev.seq <= self.last_seq {
                continue;
            }
            if ev.seq != self.last_seq + 1 {
                self.broken = true;
                self.writer.set_stale();
                return;
            }
            self.last_seq = ev.seq;
            self.changed = true;
            let Some(&i) = self.index.get(&ev.instrument) else { continue };
            let book = &mut self.books[i].1;
            match ev.view() {
                EventView::LevelDelta { side, price, qty, orders, .. } => {
                    book.apply(&LevelUpdate { side, price, qty, orders: if qty == 0 { 0 } else { orders } });
                }
                EventView::InstrumentStatus { halted } => book.halted = halted,
                _ => {}
            }
        }
    }

    /// Whether events arrived since the last image.
    pub fn has_changes(&self) -> bool {
        self.changed && !self.broken
    }

    /// Writes an image of the books at the last event applied, if anything arrived since the
    /// previous one. Returns whether one was written.
    pub fn publish(&mut self) -> bool {
        if !self.has_changes() {
            return false;
        }
        let mut tx = self.writer.begin(self.last_seq);
        for (id, b) in &self.books {
            tx.book(*id, b.halted, b.levels(Side::Buy), b.levels(Side::Sell));
        }
        tx.commit();
        self.changed = false;
        true
    }

    /// The engine sequence the books are at.
    pub fn engine_seq(&self) -> Seq {
        self.last_seq
    }

    /// Images published so far.
    pub fn generation(&self) -> u64 {
        self.writer.generation()
    }

    /// Whether events were lost (the image is stale for good).
    pub fn is_broken(&self) -> bool {
        self.broken
    }
}

/// Settings of an [`ImagePublisher`].
#[derive(Clone, Copy, Debug)]
pub struct ImagePublisherConfig {
    /// Levels per side in the image (default 1000: deeper levels are left out and the
    /// instrument's image flagged truncated).
    pub depth: usize,
    /// Least time between two images while events keep coming (an image is also written as soon
    /// as the stream goes idle). Must be well below the time the engine takes to fill the
    /// outbound ring, or a lapped shard may find every image already too old.
    pub min_interval: Duration,
    /// Sleep when no event is waiting.
    pub idle_sleep: Duration,
}

impl Default for ImagePublisherConfig {
    fn default() -> Self {
        ImagePublisherConfig { depth: DEFAULT_DEPTH, min_interval: Duration::from_millis(1), idle_sleep: Duration::from_micros(200) }
    }
}

/// What an [`ImagePublisher`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImagePublisherStats {
    /// Images written.
    pub images: u64,
    /// Engine sequence of the last one.
    pub engine_seq: Seq,
    /// Whether events were lost (the image went stale).
    pub broken: bool,
}

/// A thread running an [`ImageFollower`] over an [`EventSource`]. Stop it with
/// [`ImagePublisher::stop`] (also on drop).
pub struct ImagePublisher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ImagePublisherStats>>,
}

impl ImagePublisher {
    /// Runs `follower` over `source` (lossless sources only: a [`ChannelSource`]; a lossy one
    /// that gets lapped makes the image stale).
    pub fn spawn<S: EventSource + 'static>(mut source: S, mut follower: ImageFollower, cfg: ImagePublisherConfig) -> std::io::Result<ImagePublisher> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new().name("tickwire-image".into()).spawn(move || {
            let mut evs = Vec::new();
            let mut last = Instant::now();
            let mut images = 0;
            loop {
                // Acquire: pairs with the Release store of `stop`.
                let stopping = stop2.load(Ordering::Acquire);
                evs.clear();
                let n = source.poll(&mut evs, 65_536);
                follower.apply(&evs);
                if follower.has_changes() && (n == 0 || stopping || last.elapsed() >= cfg.min_interval) {
                    follower.publish();
                    images += 1;
                    last = Instant::now();
                }
                if n == 0 {
                    if stopping || source.is_closed() {
                        break;
                    }
                    std::thread::sleep(cfg.idle_sleep);
                }
            }
            ImagePublisherStats { images, engine_seq: follower.engine_seq(), broken: follower.is_broken() }
        })?;
        Ok(ImagePublisher { stop, thread: Some(thread) })
    }

    /// The in-process wiring: creates the image at `path` from `seed` (the engine's state before
    /// its next event) and returns the sender to give every engine event batch to (e.g. one more
    /// entry of the gateway's feed senders), plus the running publisher.
    pub fn spawn_channel(path: &Path, seed: &crate::Seed, cfg: ImagePublisherConfig) -> Result<(FeedSender, ImagePublisher), RingError> {
        let follower = ImageFollower::create(path, seed, cfg.depth)?;
        let (tx, rx) = channel();
        let p = ImagePublisher::spawn(rx, follower, cfg).map_err(|e| RingError::Io(path.to_path_buf(), e))?;
        Ok((tx, p))
    }

    /// Applies what was already sent, writes a last image, stops the thread.
    pub fn stop(mut self) -> ImagePublisherStats {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> ImagePublisherStats {
        // Release: pairs with the Acquire load in the publisher loop.
        self.stop.store(true, Ordering::Release);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for ImagePublisher {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}

/// Writes the server's DURABLE event stream into a shared-memory ring for external feed shard
/// processes (`tickwire-feed --shm PATH`), so they never see an event whose command is not yet
/// journaled (the engine's own outbound ring is not gated by the journal).
///
/// Private fields are redacted: only market data (level deltas, trades, instrument status) keeps
/// its fields; every other event keeps `seq`, `cmd_seq`, `kind` and `instrument` and is zeroed
/// otherwise, so a shard process learns nothing about accounts or orders. Ring sequence == event
/// `seq` (the ring starts at the engine's next event sequence), which the book-image resync needs.
/// The writer never waits: the ring has no gating consumers; slow shards get lapped and resync.
pub struct MdRingWriter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

/// Keeps only market-data fields of an event (see [`MdRingWriter`]).
pub fn redact(ev: &Event) -> Event {
    use tickwire_core::EventKind as K;
    match ev.kind() {
        Some(K::LevelDelta | K::Trade | K::InstrumentStatus) => *ev,
        _ => Event { seq: ev.seq, cmd_seq: ev.cmd_seq, kind: ev.kind, instrument: ev.instrument, ..Event::default() },
    }
}

impl MdRingWriter {
    /// Creates the ring at `path` (`capacity` records, first sequence `first_seq` = the engine's
    /// next event sequence) and returns the sender to give every durable event batch to, plus the
    /// running writer thread.
    pub fn spawn(path: &Path, capacity: usize, first_seq: Seq) -> Result<(FeedSender, MdRingWriter), RingError> {
        let ring = tickwire_core::ring::RingBuffer::<Event>::create_shm(path, capacity, first_seq)?;
        let (mut producer, _) = ring.into_single_producer(0, tickwire_core::ring::WaitStrategyKind::default());
        let (tx, rx) = crossbeam_channel::unbounded::<Vec<Event>>();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tickwire-md-ring".into())
            .spawn(move || {
                let mut written = 0u64;
                loop {
                    match rx.recv_timeout(Duration::from_millis(20)) {
                        Ok(batch) => {
                            for ev in &batch {
                                debug_assert_eq!(ev.seq, producer.next_seq(), "md ring: event sequence gap");
                                // No gating consumers: never waits.
                                let _ = producer.try_push(&redact(ev));
                            }
                            producer.publish();
                            written += batch.len() as u64;
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    }
                    // Acquire: pairs with the Release store in `stop`.
                    if stop2.load(Ordering::Acquire) && rx.is_empty() {
                        break;
                    }
                }
                written
            })
            .map_err(|e| RingError::Io(path.to_path_buf(), e))?;
        Ok((FeedSender { tx, notifier: Arc::new(OnceLock::new()) }, MdRingWriter { stop, thread: Some(thread) }))
    }

    /// Writes what was already sent, stops the thread; returns the number of events written.
    pub fn stop(mut self) -> u64 {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> u64 {
        // Release: pairs with the Acquire load in the writer loop.
        self.stop.store(true, Ordering::Release);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for MdRingWriter {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}
