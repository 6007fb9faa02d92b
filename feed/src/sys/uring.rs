//! io_uring backend (Linux ≥ 6.0): the same readiness surface as `epoll.rs`, built on completions.
//!
//! - **Accept**: one multishot accept on the listener; accepted fds wait in a queue that
//!   [`Backend::accept`] hands out (re-armed if the kernel ends it, e.g. after EMFILE).
//! - **Receive**: one multishot receive per connection, with buffers the kernel picks from a
//!   provided-buffer ring (`BUF_COUNT` × `BUF_SIZE`, shared by every connection of the shard,
//!   mapped and made resident when the ring is set up: a fixed per-shard cost), so an idle
//!   connection owns no receive memory. Completed buffers wait per connection (chained through
//!   the ring's per-buffer table, no allocation) until the shard reads them (copied into its
//!   scratch buffer, then given back to the ring at once).
//! - **Send**: the hub lends its frames as `IoSlice`s only for the duration of a `writev` call,
//!   so the bytes must be kept by the backend until the send completes:
//!   - a single small frame written to a connection with nothing pending (a heartbeat, one
//!     market-data update, a pong) is kept once per shard in a *shared frame* (reference
//!     counted, looked up by content among the last few): a heartbeat to 10 000 idle
//!     connections is one copy, not 10 000;
//!   - anything else is copied into a pooled per-connection staging buffer (the kernel would
//!     copy it into the socket buffer anyway).
//!
//!   At the next `wait` (or [`Backend::submit`]), every pending buffer becomes one `SEND` SQE
//!   (`MSG_WAITALL`, so a full socket parks the request in the kernel instead of returning a
//!   short count). While a send is in flight `writev` reports `WouldBlock`, so frames stay in the
//!   hub's queue and its outbound budget (conflate / disconnect) works as with epoll; the
//!   completion is reported as writability to a connection that was refused (`F_WANT_W`). The
//!   send's state lives in the connection's slot (no table of send slots that would grow with a
//!   heartbeat burst).
//! - **One submission per loop iteration**: every SQE produced during an iteration (sends,
//!   re-arms, cancels) goes to the kernel in the same `io_uring_enter` that waits for the next
//!   completions (more only if the submission queue fills up).
//! - **Close**: a connection with data still pending or in flight is closed when that send
//!   completes (or after `CLOSE_LINGER`), like a socket close after a write lets the kernel
//!   finish sending; then `shutdown` + `close`, and the receive is cancelled.
//! - **Memory**: the connection slot is 16 bytes; staging buffers, shared frames and the id
//!   lists are given back every tick when no longer used, and after a burst (a connection storm's
//!   handshakes and snapshots) the allocator is asked to return freed pages to the kernel
//!   (`malloc_trim`, glibc), so an idle subscriber costs its slot, not the peak of the burst.
//! - Zero-copy send (`SEND_ZC`) is not used: writes are one to a few hundred bytes, far under
//!   the ~10 KB where the kernel says pinning plus a second completion per send beats the copy,
//!   and data looped to a local socket is copied anyway (docs/market-data.md).
//!
//! The ring is created on the first `wait`, i.e. on the shard's own thread, so it can be a
//! single-issuer ring with deferred task work (completions run only when the shard asks).

use super::{Backend, Notifier, Ready};
use crate::hub::ConnId;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Entries of the submission queue (more SQEs in one iteration cause intermediate submits).
const SQ_ENTRIES: u32 = 4096;
/// Entries of the completion queue.
const CQ_ENTRIES: u32 = 65_536;
/// Receive buffers of the shard (a power of two): all in the provided-buffer ring from the start.
/// A receive that finds the ring empty ends with ENOBUFS and is armed again once the shard has
/// read (and so given back) what it holds: the bytes wait in the socket meanwhile.
const BUF_COUNT: u16 = 1024;
/// Size of one receive buffer (client input is small: upgrade requests, subscriptions, pings).
const BUF_SIZE: usize = 512;
/// Buffer group id of the ring.
const BGID: u16 = 7;
/// Most bytes staged for one connection before `writev` reports a full socket.
const STAGE_MAX: usize = 256 * 1024;
/// Staging buffers kept for reuse while busy.
const POOL_MAX: usize = 4096;
/// Staging buffers kept through a trim (every tick, see `Uring::trim_impl`).
const POOL_KEEP: usize = 64;
/// Staging buffers larger than this are not kept in the pool.
const POOL_BUF_MAX: usize = 16 * 1024;
/// Largest single frame sent from a shared copy (see *Send* above).
const SHARE_MAX: usize = 1024;
/// Shared frames looked up by content when a frame is written (the most recent ones).
const SHARE_RECENT: usize = 4;
/// A burst, after which the allocator is asked to give freed pages back (`malloc_trim`): this
/// many bytes of staging buffers and shared frames allocated during one tick...
const RELEASE_MIN: usize = 256 * 1024;
/// ... or this many connections accepted during one tick (a storm's handshakes leave freed
/// memory all over the shard: requests, answers, queues).
const RELEASE_ACCEPTS: usize = 256;
/// Ticks that ask, starting with the first quiet tick after the burst (the next one also
/// catches what the hub frees a tick later). Not while a burst goes on: steady traffic would
/// otherwise trim every tick.
const RELEASE_TICKS: u8 = 2;

/// How long a closed connection's last send may take before the socket is shut down anyway.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

// user_data: kind in the top 4 bits.
const K_ACCEPT: u64 = 1;
const K_WAKE: u64 = 2;
const K_RECV: u64 = 3;
const K_SEND: u64 = 4;
const K_IGNORE: u64 = 5;

/// No buffer (receive chains).
const NO_BUF: u16 = u16::MAX;
/// No send buffer (`Conn::tx`).
const NO_TX: u32 = u32::MAX;
/// `Conn::tx` names a shared frame (index in `Uring::shared`) when this bit is set, else a
/// staging buffer (index in `Uring::stage`).
const TX_SHARED: u32 = 1 << 31;

// `Conn::flags`.
/// The slot holds an open connection.
const F_OPEN: u8 = 1;
/// The peer closed its side (after the buffers already received).
const F_EOF: u8 = 2;
/// A multishot receive is armed.
const F_RECV_ARMED: u8 = 4;
/// `tx` is in flight (a SEND SQE is with the kernel).
const F_SENDING: u8 = 8;
/// The connection is in `Uring::to_send`.
const F_IN_TO_SEND: u8 = 16;
/// Readiness gathered during the current `wait`: readable, writable.
const F_MARK_R: u8 = 32;
const F_MARK_W: u8 = 64;
/// The hub was told `WouldBlock` (or got a short write): report writability when the send
/// completes (a connection whose frames were all taken is not woken for nothing).
const F_WANT_W: u8 = 128;

fn ud(kind: u64, payload: u64) -> u64 {
    (kind << 60) | (payload & ((1 << 60) - 1))
}

/// A connection's key in user_data: id and 24-bit generation.
fn conn_key(id: ConnId, gen: u32) -> u64 {
    ((gen as u64 & 0xFF_FFFF) << 32) | id as u64
}

fn key_id_gen(payload: u64) -> (ConnId, u32) {
    ((payload & 0xFFFF_FFFF) as ConnId, ((payload >> 32) & 0xFF_FFFF) as u32)
}

fn recv_ud(id: ConnId, gen: u32) -> u64 {
    ud(K_RECV, conn_key(id, gen))
}

fn send_ud(key: u64) -> u64 {
    ud(K_SEND, key)
}

/// Whether this kernel lets this process use io_uring with what the backend needs (ring setup
/// and a provided-buffer ring). `Err` says why not (e.g. EPERM in a sandbox, ENOSYS, too old).
///
/// Checked once per process, on a thread of its own: the kernel tears a ring down
/// asynchronously and then posts task work to the thread that created it, which interrupts that
/// thread's blocking socket calls that have a timeout (EINTR) — a caller's thread must not own
/// the probe ring.
pub fn probe() -> Result<(), String> {
    static RESULT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    RESULT
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("tickwire-uring-probe".into())
                .spawn(probe_here)
                .map_err(|e| format!("probe thread: {e}"))?
                .join()
                .unwrap_or_else(|_| Err("io_uring probe panicked".into()))
        })
        .clone()
}

fn probe_here() -> Result<(), String> {
    let ring: IoUring = IoUring::builder().build(8).map_err(|e| format!("io_uring_setup: {e}"))?;
    if !ring.params().is_feature_ext_arg() {
        return Err("io_uring without EXT_ARG (kernel older than 5.11)".into());
    }
    let br = BufRing::new(8, 64).map_err(|e| format!("buffer ring allocation: {e}"))?;
    // SAFETY: the ring memory lives in `br`, which outlives the registration (unregistered
    // below, before `br` is dropped).
    unsafe { ring.submitter().register_buf_ring_with_flags(br.ring_addr(), 8, BGID, 0) }
        .map_err(|e| format!("provided-buffer ring (kernel older than 5.19?): {e}"))?;
    let _ = ring.submitter().unregister_buf_ring(BGID);
    drop(ring);
    drop(br);
    Ok(())
}

/// Where a received buffer stands while a connection holds it: bytes received, bytes already
/// read, the next buffer of the same connection (`NO_BUF`: none) and, in the connection's first
/// buffer, its last one (where the next completion is chained).
#[derive(Clone, Copy)]
struct RxMeta {
    len: u16,
    off: u16,
    next: u16,
    last: u16,
}

/// The provided-buffer ring: `count` entries (page-aligned, shared with the kernel) followed by
/// the `count` buffers they point to, in one anonymous mapping made resident when it is created
/// (a fixed per-shard cost, not one that grows with a connection storm). Every buffer is either
/// in the ring or held by one connection (chained through `meta`).
struct BufRing {
    map: *mut u8,
    map_len: usize,
    /// Bytes of the entries at the start of `map` (whole pages).
    ring_bytes: usize,
    count: u16,
    size: usize,
    tail: u16,
    meta: Box<[RxMeta]>,
}

// SAFETY: the mapping is owned by this value and used only by the thread that owns the backend.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Bytes of the mapping for `count` buffers of `size` bytes.
    fn map_len(count: u16, size: usize) -> usize {
        BufRing::ring_bytes(count) + count as usize * size
    }

    fn ring_bytes(count: u16) -> usize {
        (count as usize * std::mem::size_of::<types::BufRingEntry>()).div_ceil(4096).max(1) * 4096
    }

    /// A ring with all `count` buffers in it.
    fn new(count: u16, size: usize) -> io::Result<BufRing> {
        assert!(count.is_power_of_two() && count < NO_BUF && size <= u16::MAX as usize);
        let map_len = BufRing::map_len(count, size);
        // SAFETY: a fresh private anonymous mapping (no address hint, no fd); the result is
        // checked. MAP_POPULATE makes it resident now (zero-filled, so the entries start empty).
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), map_len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE, -1, 0)
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut r = BufRing {
            map: p.cast(),
            map_len,
            ring_bytes: BufRing::ring_bytes(count),
            count,
            size,
            tail: 0,
            meta: vec![RxMeta { len: 0, off: 0, next: NO_BUF, last: NO_BUF }; count as usize].into_boxed_slice(),
        };
        for bid in 0..count {
            r.push(bid);
        }
        r.publish();
        Ok(r)
    }

    fn entries(&self) -> *mut types::BufRingEntry {
        self.map.cast()
    }

    fn ring_addr(&self) -> u64 {
        self.map as u64
    }

    /// Puts buffer `bid` back in the ring (visible after [`BufRing::publish`]).
    fn push(&mut self, bid: u16) {
        debug_assert!(bid < self.count);
        let i = (self.tail & (self.count - 1)) as usize;
        // SAFETY: `i < count`, inside the entries; the kernel only reads entries between its
        // head and the published tail, and this one is past the published tail (at most `count`
        // buffers exist, so the ring never holds more than `count`).
        let e = unsafe { &mut *self.entries().add(i) };
        // SAFETY: `bid < count`: the buffer lies inside the mapping.
        e.set_addr(unsafe { self.map.add(self.ring_bytes + bid as usize * self.size) } as u64);
        e.set_len(self.size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes the pushed entries to the kernel.
    fn publish(&mut self) {
        // SAFETY: `entries` is the ring's base; the tail field overlays entry 0's `resv`, which
        // the kernel reads with acquire semantics.
        let tail = unsafe { types::BufRingEntry::tail(self.entries()) } as *const std::sync::atomic::AtomicU16;
        // SAFETY: aligned u16 inside the live mapping.
        unsafe { &*tail }.store(self.tail, std::sync::atomic::Ordering::Release);
    }

    /// The bytes of buffer `bid` (all `size` of them; the caller knows how many were received).
    ///
    /// # Safety
    ///
    /// The caller must hold `bid`: a receive completion handed it over (it was taken out of the
    /// ring by the kernel) and it has not been [`BufRing::push`]ed back since. The kernel writes
    /// only to buffers in the ring, so a held buffer does not change while the slice lives (and
    /// the slice borrows `self`, so the buffer cannot be pushed back meanwhile). A buffer still
    /// in the ring may be written by the kernel at any time: reading it would be a data race.
    unsafe fn buf(&self, bid: u16) -> &[u8] {
        assert!(bid < self.count);
        // SAFETY: inside the mapping (checked above), which lives as long as `self`; the caller
        // holds the buffer (this function's contract), so the kernel does not write to it.
        unsafe { std::slice::from_raw_parts(self.map.add(self.ring_bytes + bid as usize * self.size), self.size) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length; nothing refers to it any more: `Drop for
        // Uring` unregisters the ring when no operation is in flight (and leaks this mapping
        // otherwise), and a ring that never started never registered it.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

/// One connection's slot (16 bytes; a free slot keeps its generation for the next connection).
#[derive(Clone, Copy)]
struct Conn {
    fd: RawFd,
    /// Generation of the slot (24 bits), in user_data to recognise stale completions.
    gen: u32,
    /// The bytes to send (`NO_TX`, a staging buffer, or `TX_SHARED` | a shared frame), from
    /// their start (a short send keeps only the rest, see `Uring::keep_rest`).
    tx: u32,
    /// The first received buffer not yet read (chained through `BufRing::meta`).
    rx_head: u16,
    /// Error to report (errno, always < 256 on Linux; 0: none).
    err: u8,
    flags: u8,
}

const _: () = assert!(std::mem::size_of::<Conn>() == 16);

/// An errno as stored in `Conn::err`.
fn errno8(e: i32) -> u8 {
    u8::try_from(e).ok().filter(|&e| e != 0).unwrap_or(libc::EIO as u8)
}

impl Conn {
    const FREE: Conn = Conn { fd: -1, gen: 0, tx: NO_TX, rx_head: NO_BUF, err: 0, flags: 0 };

    fn open(&self) -> bool {
        self.flags & F_OPEN != 0
    }
}

/// A closed connection's last send, still in flight: the socket is closed when it completes.
struct Orphan {
    tx: u32,
    fd: RawFd,
    since: Instant,
    /// Shut down after `CLOSE_LINGER` (the rest is not sent).
    forced: bool,
}

/// A frame sent to several connections from one copy.
struct SharedFrame {
    bytes: Box<[u8]>,
    /// Connections whose `tx` (or orphans) refer to it.
    users: u32,
}

struct Ring {
    ring: IoUring,
    bufs: BufRing,
}

pub(crate) struct Uring {
    ring: Option<Ring>,
    listener: std::net::TcpListener,
    wake: Arc<OwnedFd>,
    sndbuf: Option<usize>,
    conns: Vec<Conn>,
    accepted: VecDeque<RawFd>,
    accept_armed: bool,
    accept_retry: Option<Instant>,
    wake_armed: bool,
    /// Staging buffers in use (indexed by `Conn::tx`), free indices, how many are in use.
    stage: Vec<Vec<u8>>,
    stage_free: Vec<u32>,
    stage_live: usize,
    /// Shared frames (indexed by `Conn::tx & !TX_SHARED`), free indices, the latest ones.
    shared: Vec<SharedFrame>,
    shared_free: Vec<u32>,
    shared_recent: [u32; SHARE_RECENT],
    shared_next: usize,
    /// Closed connections' sends in flight, by their key (`conn_key`, also their user_data).
    orphans: HashMap<u64, Orphan>,
    to_send: Vec<ConnId>,
    rearm: Vec<ConnId>,
    again: Vec<ConnId>,
    marked: Vec<ConnId>,
    marked_wake: bool,
    pool: Vec<Vec<u8>>,
    /// Operations whose last completion has not arrived (multishots armed, sends in flight).
    inflight: usize,
    /// Bytes of staging buffers and shared frames allocated, and connections accepted, since
    /// the last tick.
    allocated: usize,
    accepts: usize,
    /// Ticks that still call `malloc_trim` (see `RELEASE_TICKS`).
    release_ticks: u8,
    /// A tick allocated much (a burst): the first quiet tick after it starts `release_ticks`.
    burst_seen: bool,
    /// Inside `reap` (so `push` does not reap again).
    reaping: bool,
    /// Entries `push` could not queue while reaping; `wait` pushes them first.
    deferred: Vec<squeue::Entry>,
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn shutdown_close(fd: RawFd) {
    // SAFETY: `fd` is a socket this backend owns and closes exactly once.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
        libc::close(fd);
    }
}

/// Asks the allocator to give the free pages of its heaps back to the kernel (glibc keeps freed
/// memory below the top of a heap resident otherwise).
fn release_free_pages() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Uring {
    pub(crate) fn new(listener: std::net::TcpListener, sndbuf: Option<usize>) -> io::Result<Uring> {
        probe().map_err(io::Error::other)?;
        // Blocking: io_uring then parks accepts in the kernel instead of failing with EAGAIN.
        listener.set_nonblocking(false)?;
        // SAFETY: plain syscall; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `efd` is a fresh fd owned by nobody else.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(efd) });
        Ok(Uring {
            ring: None,
            listener,
            wake,
            sndbuf,
            conns: Vec::new(),
            accepted: VecDeque::new(),
            accept_armed: false,
            accept_retry: None,
            wake_armed: false,
            stage: Vec::new(),
            stage_free: Vec::new(),
            stage_live: 0,
            shared: Vec::new(),
            shared_free: Vec::new(),
            shared_recent: [NO_TX; SHARE_RECENT],
            shared_next: 0,
            orphans: HashMap::new(),
            to_send: Vec::new(),
            rearm: Vec::new(),
            again: Vec::new(),
            marked: Vec::new(),
            marked_wake: false,
            pool: Vec::new(),
            inflight: 0,
            allocated: 0,
            accepts: 0,
            release_ticks: 0,
            burst_seen: false,
            reaping: false,
            deferred: Vec::new(),
        })
    }

    fn build_ring() -> io::Result<IoUring> {
        let mut b = IoUring::builder();
        b.setup_cqsize(CQ_ENTRIES).setup_single_issuer().setup_defer_taskrun().setup_submit_all();
        match b.build(SQ_ENTRIES) {
            Ok(r) => Ok(r),
            // Older kernels (< 6.1) lack deferred task work.
            Err(_) => IoUring::builder().setup_cqsize(CQ_ENTRIES).build(SQ_ENTRIES),
        }
    }

    fn ensure_ring(&mut self) -> io::Result<()> {
        if self.ring.is_some() {
            return Ok(());
        }
        let ring = Uring::build_ring()?;
        let bufs = BufRing::new(BUF_COUNT, BUF_SIZE)?;
        // SAFETY: the ring memory lives in `bufs`, stored next to the ring in `Ring`; it is freed
        // only after the ring is gone (see `Drop for Uring`).
        unsafe { ring.submitter().register_buf_ring_with_flags(bufs.ring_addr(), BUF_COUNT, BGID, 0)? };
        self.ring = Some(Ring { ring, bufs });
        Ok(())
    }

    /// Queues one SQE, submitting first if the queue is full.
    fn push(&mut self, e: squeue::Entry) -> io::Result<()> {
        for _ in 0..1000 {
            let Some(r) = self.ring.as_mut() else { return Err(io::Error::other("io_uring not started")) };
            // SAFETY: every buffer an SQE points to (staging buffers in `stage`, shared frames in
            // `shared`, the buffer ring) stays alive and unmoved until its final completion is
            // reaped: a buffer is released only by its send's completion.
            if unsafe { r.ring.submission().push(&e) }.is_ok() {
                return Ok(());
            }
            if self.reaping {
                // Reaping again here would handle later completions before the rest of the
                // current batch (two receives of one connection out of order): the entry waits
                // for the next `wait`, which pushes it first.
                self.deferred.push(e);
                return Ok(());
            }
            match r.ring.submit() {
                Ok(_) => {}
                Err(err) if err.raw_os_error() == Some(libc::EBUSY) || err.kind() == io::ErrorKind::Interrupted => {
                    // Completion queue overflowing: reap before submitting more.
                    let ts = types::Timespec::new();
                    let _ = r.ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&ts));
                    self.reap();
                }
                Err(err) => return Err(err),
            }
        }
        Err(io::Error::other("io_uring submission queue stuck"))
    }

    /// The open connection `id`.
    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id as usize).filter(|c| c.open())
    }

    fn arm_recv(&mut self, id: ConnId) {
        let Some(c) = self.conn_mut(id) else { return };
        if c.flags & (F_RECV_ARMED | F_EOF) != 0 || c.err != 0 {
            return;
        }
        c.flags |= F_RECV_ARMED;
        let e = opcode::RecvMulti::new(types::Fd(c.fd), BGID).build().user_data(recv_ud(id, c.gen));
        self.inflight += 1;
        if self.push(e).is_err() {
            self.inflight -= 1;
            if let Some(c) = self.conn_mut(id) {
                c.flags &= !F_RECV_ARMED;
                c.err = libc::ENOMEM as u8;
            }
            self.again.push(id);
        }
    }

    /// Records readiness (`F_MARK_R` / `F_MARK_W`) for the current `wait`.
    fn mark(&mut self, id: ConnId, bits: u8) {
        if let Some(c) = self.conn_mut(id) {
            let first = c.flags & (F_MARK_R | F_MARK_W) == 0;
            c.flags |= bits;
            if first {
                self.marked.push(id);
            }
        }
    }

    fn recycle(&mut self, bid: u16) {
        if let Some(r) = self.ring.as_mut() {
            r.bufs.push(bid);
        }
    }

    /// Gives back the memory of burst-sized tables (staging and shared-frame tables when none is
    /// in use, staging pool beyond `POOL_KEEP`, orphan and id lists), then, if a burst allocated
    /// much since the last time, asks the allocator to return its free pages: called by the
    /// shard every tick, so a heartbeat or a connection storm leaves no memory proportional to
    /// the connections behind, while the busy path keeps its buffers between ticks.
    fn trim_impl(&mut self) {
        if self.stage_live == 0 {
            self.stage = Vec::new();
            self.stage_free = Vec::new();
        }
        if self.shared.iter().all(|f| f.users == 0) {
            self.shared = Vec::new();
            self.shared_free = Vec::new();
            self.shared_recent = [NO_TX; SHARE_RECENT];
        }
        if self.deferred.is_empty() {
            self.deferred = Vec::new();
        }
        if self.orphans.is_empty() {
            self.orphans = HashMap::new();
        }
        self.pool.truncate(POOL_KEEP);
        self.pool.shrink_to_fit();
        for v in [&mut self.to_send, &mut self.rearm, &mut self.again, &mut self.marked] {
            if v.is_empty() {
                *v = Vec::new();
            }
        }
        if self.accepted.is_empty() {
            self.accepted = VecDeque::new();
        }
        if self.allocated >= RELEASE_MIN || self.accepts >= RELEASE_ACCEPTS {
            // Still busy: trimming now would only fault the pages back in (and lock every
            // allocator arena each tick of steady traffic).
            self.burst_seen = true;
        } else if std::mem::take(&mut self.burst_seen) {
            self.release_ticks = RELEASE_TICKS;
        }
        self.allocated = 0;
        self.accepts = 0;
        if self.release_ticks > 0 {
            self.release_ticks -= 1;
            release_free_pages();
        }
    }

    /// Bytes this backend holds for its connections (sizes and capacities): the connection
    /// table, staging buffers, shared frames, orphaned sends, the staging pool and the id lists.
    /// Received buffers belong to the per-shard ring (`fixed_memory_bytes`).
    fn conn_memory_bytes_impl(&self) -> usize {
        use std::mem::size_of;
        let mut n = self.conns.capacity() * size_of::<Conn>();
        n += self.stage.capacity() * size_of::<Vec<u8>>() + self.stage.iter().map(|b| b.capacity()).sum::<usize>();
        n += self.shared.capacity() * size_of::<SharedFrame>() + self.shared.iter().map(|f| f.bytes.len()).sum::<usize>();
        n += self.orphans.capacity() * (size_of::<u64>() + size_of::<Orphan>());
        n += self.pool.capacity() * size_of::<Vec<u8>>() + self.pool.iter().map(|b| b.capacity()).sum::<usize>();
        let ids = self.stage_free.capacity()
            + self.shared_free.capacity()
            + self.to_send.capacity()
            + self.rearm.capacity()
            + self.again.capacity()
            + self.marked.capacity();
        n + ids * 4 + self.accepted.capacity() * 4
    }

    /// Per-shard bytes: the receive buffers and their ring entries (one mapping, resident from
    /// the start) and the per-buffer table. The SQ/CQ rings are kernel memory mapped at setup.
    fn fixed_memory_bytes_impl(&self) -> usize {
        BufRing::map_len(BUF_COUNT, BUF_SIZE) + BUF_COUNT as usize * std::mem::size_of::<RxMeta>()
    }

    fn take_buf(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_default()
    }

    fn give_buf(&mut self, mut b: Vec<u8>) {
        if self.pool.len() < POOL_MAX && b.capacity() <= POOL_BUF_MAX {
            b.clear();
            self.pool.push(b);
        }
    }

    /// A staging buffer for a connection (from the pool).
    fn new_stage(&mut self) -> u32 {
        let b = self.take_buf();
        self.stage_live += 1;
        match self.stage_free.pop() {
            Some(i) => {
                self.stage[i as usize] = b;
                i
            }
            None => {
                self.stage.push(b);
                (self.stage.len() - 1) as u32
            }
        }
    }

    /// A reference to a shared copy of `b` (an existing one if one of the latest has the same
    /// bytes).
    fn share(&mut self, b: &[u8]) -> u32 {
        for &i in &self.shared_recent {
            if let Some(f) = self.shared.get_mut(i as usize) {
                if *f.bytes == *b {
                    f.users += 1;
                    return i;
                }
            }
        }
        self.allocated += b.len();
        let f = SharedFrame { bytes: b.into(), users: 1 };
        let i = match self.shared_free.pop() {
            Some(i) => {
                self.shared[i as usize] = f;
                i
            }
            None => {
                self.shared.push(f);
                (self.shared.len() - 1) as u32
            }
        };
        let old = std::mem::replace(&mut self.shared_recent[self.shared_next], i);
        self.shared_next = (self.shared_next + 1) % SHARE_RECENT;
        if old != NO_TX && self.shared[old as usize].users == 0 {
            self.free_shared(old);
        }
        i
    }

    fn free_shared(&mut self, i: u32) {
        self.shared[i as usize].bytes = Box::default();
        self.shared_free.push(i);
    }

    /// Lets go of a connection's send buffer.
    fn release_tx(&mut self, tx: u32) {
        if tx == NO_TX {
            return;
        }
        if tx & TX_SHARED != 0 {
            let i = tx & !TX_SHARED;
            let f = &mut self.shared[i as usize];
            f.users -= 1;
            if f.users == 0 && !self.shared_recent.contains(&i) {
                self.free_shared(i);
            }
        } else {
            let b = std::mem::take(&mut self.stage[tx as usize]);
            self.give_buf(b);
            self.stage_free.push(tx);
            self.stage_live -= 1;
        }
    }

    fn tx_bytes(&self, tx: u32) -> &[u8] {
        if tx & TX_SHARED != 0 {
            &self.shared[(tx & !TX_SHARED) as usize].bytes
        } else {
            &self.stage[tx as usize]
        }
    }

    /// Submits `tx` on `fd` as the send with key `key`.
    fn submit_send(&mut self, key: u64, fd: RawFd, tx: u32) -> io::Result<()> {
        let b = self.tx_bytes(tx);
        let e = opcode::Send::new(types::Fd(fd), b.as_ptr(), b.len() as u32).flags(libc::MSG_WAITALL | libc::MSG_NOSIGNAL).build().user_data(send_ud(key));
        self.push(e)
    }

    /// Pending bytes of every connection become one send each.
    fn flush_staged(&mut self) {
        let mut ids = std::mem::take(&mut self.to_send);
        for &id in &ids {
            let Some(c) = self.conn_mut(id) else { continue };
            c.flags &= !F_IN_TO_SEND;
            if c.tx == NO_TX || c.flags & F_SENDING != 0 {
                continue;
            }
            c.flags |= F_SENDING;
            let (key, fd, tx) = (conn_key(id, c.gen), c.fd, c.tx);
            self.inflight += 1;
            if let Err(e) = self.submit_send(key, fd, tx) {
                self.conn_send_done(id, -errno_of(&e));
            }
        }
        ids.clear();
        if self.to_send.is_empty() {
            self.to_send = ids;
        }
    }

    /// A send's completion (`res` bytes or -errno), for a connection or an orphan.
    fn on_send(&mut self, key: u64, res: i32) {
        // Sends are never empty: 0 bytes sent means the connection is gone.
        let res = if res == 0 { -libc::EPIPE } else { res };
        let (id, gen) = key_id_gen(key);
        if let Some(c) = self.conns.get_mut(id as usize).filter(|c| c.open() && c.gen == gen && c.flags & F_SENDING != 0) {
            let (fd, tx) = (c.fd, c.tx);
            if res > 0 && (res as usize) < self.tx_bytes(tx).len() {
                // Short send (interrupted): send the rest.
                let rest = self.keep_rest(tx, res as usize);
                if let Some(c) = self.conn_mut(id) {
                    c.tx = rest;
                }
                if let Err(e) = self.submit_send(key, fd, rest) {
                    self.conn_send_done(id, -errno_of(&e));
                }
                return;
            }
            self.conn_send_done(id, res.min(0));
        } else if let Some(o) = self.orphans.get(&key) {
            let (fd, tx, forced) = (o.fd, o.tx, o.forced);
            if res > 0 && (res as usize) < self.tx_bytes(tx).len() && !forced {
                // Short send (interrupted): send the rest.
                let rest = self.keep_rest(tx, res as usize);
                if let Some(o) = self.orphans.get_mut(&key) {
                    o.tx = rest;
                }
                if self.submit_send(key, fd, rest).is_err() {
                    self.orphan_done(key);
                }
                return;
            }
            self.orphan_done(key);
        }
    }

    /// After a short send of `sent` bytes of `tx`: a buffer holding only the rest (the staging
    /// buffer itself, or a staging copy of a shared frame's rest). Rare: sends wait for the
    /// whole buffer (`MSG_WAITALL`) unless interrupted.
    fn keep_rest(&mut self, tx: u32, sent: usize) -> u32 {
        if tx & TX_SHARED == 0 {
            self.stage[tx as usize].drain(..sent);
            return tx;
        }
        let i = self.new_stage();
        let (shared, stage) = (&self.shared, &mut self.stage);
        stage[i as usize].extend_from_slice(&shared[(tx & !TX_SHARED) as usize].bytes[sent..]);
        self.release_tx(tx);
        i
    }

    /// A connection's send finished (`err`: 0 or -errno): its buffer is let go and the result
    /// reported as writability (or an error, as readability).
    fn conn_send_done(&mut self, id: ConnId, err: i32) {
        self.inflight -= 1;
        let Some(c) = self.conn_mut(id) else { return };
        let want_w = c.flags & F_WANT_W != 0;
        c.flags &= !(F_SENDING | F_WANT_W);
        let tx = std::mem::replace(&mut c.tx, NO_TX);
        if err < 0 && err != -libc::ECANCELED {
            if c.err == 0 {
                c.err = errno8(-err);
            }
            self.mark(id, F_MARK_R);
        } else if want_w {
            self.mark(id, F_MARK_W);
        }
        self.release_tx(tx);
    }

    /// An orphaned send finished: the socket is closed.
    fn orphan_done(&mut self, key: u64) {
        let Some(o) = self.orphans.remove(&key) else { return };
        self.inflight -= 1;
        shutdown_close(o.fd);
        self.release_tx(o.tx);
    }

    /// Reaps every completion and turns it into state.
    /// Pushes the entries deferred while reaping (in order).
    fn push_deferred(&mut self) -> io::Result<()> {
        for e in std::mem::take(&mut self.deferred) {
            self.push(e)?;
        }
        Ok(())
    }

    fn reap(&mut self) {
        debug_assert!(!self.reaping);
        self.reaping = true;
        self.reap_batches();
        self.reaping = false;
    }

    fn reap_batches(&mut self) {
        const BATCH: usize = 256;
        let mut batch = [(0u64, 0i32, 0u32); BATCH];
        loop {
            let Some(r) = self.ring.as_mut() else { return };
            let mut n = 0;
            for c in r.ring.completion() {
                batch[n] = (c.user_data(), c.result(), c.flags());
                n += 1;
                if n == BATCH {
                    break;
                }
            }
            for &(u, res, flags) in &batch[..n] {
                self.on_cqe(u, res, flags);
            }
            if let Some(r) = self.ring.as_mut() {
                r.bufs.publish();
            }
            if n < BATCH {
                return;
            }
        }
    }

    fn on_cqe(&mut self, u: u64, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        match u >> 60 {
            K_ACCEPT => {
                if res >= 0 {
                    self.accepted.push_back(res);
                } else if res != -libc::ECANCELED {
                    eprintln!("tickwire-feed: accept: {}", io::Error::from_raw_os_error(-res));
                    self.accept_retry = Some(Instant::now() + Duration::from_millis(20));
                }
                if !more {
                    self.accept_armed = false;
                    self.inflight -= 1;
                }
            }
            K_WAKE => {
                let mut v = 0u64;
                // SAFETY: reads 8 bytes into `v` from the non-blocking eventfd.
                unsafe { libc::read(self.wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
                self.marked_wake = true;
                if !more {
                    self.wake_armed = false;
                    self.inflight -= 1;
                }
            }
            K_RECV => {
                let (id, gen) = key_id_gen(u);
                if !more {
                    self.inflight -= 1;
                }
                let bid = cqueue::buffer_select(flags);
                let Some(c) = self.conns.get_mut(id as usize).filter(|c| c.open() && c.gen == gen) else {
                    if let Some(b) = bid {
                        self.recycle(b);
                    }
                    return;
                };
                if !more {
                    c.flags &= !F_RECV_ARMED;
                }
                if res > 0 {
                    if let (Some(b), Some(r)) = (bid, self.ring.as_mut()) {
                        let meta = &mut r.bufs.meta;
                        meta[b as usize] = RxMeta { len: res as u16, off: 0, next: NO_BUF, last: b };
                        if c.rx_head == NO_BUF {
                            c.rx_head = b;
                        } else {
                            let head = c.rx_head as usize;
                            let last = meta[head].last as usize;
                            meta[last].next = b;
                            meta[head].last = b;
                        }
                    }
                    if !more {
                        self.rearm.push(id);
                    }
                } else if res == 0 {
                    c.flags |= F_EOF;
                    if let Some(b) = bid {
                        self.recycle(b);
                    }
                } else if res == -libc::ENOBUFS {
                    // Every buffer is held by a connection: arm again at the next `wait`, after
                    // the shard has read (and so given back) what was received.
                    self.rearm.push(id);
                } else if res != -libc::ECANCELED && c.err == 0 {
                    c.err = errno8(-res);
                }
                self.mark(id, F_MARK_R);
            }
            K_SEND => self.on_send(u & ((1 << 60) - 1), res),
            _ => {}
        }
    }
}

impl Backend for Uring {
    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Ready>) -> io::Result<()> {
        self.ensure_ring()?;
        let now = Instant::now();
        if !self.accept_armed && self.accept_retry.is_none_or(|t| now >= t) {
            self.accept_retry = None;
            self.accept_armed = true;
            self.inflight += 1;
            let e = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd())).flags(libc::SOCK_CLOEXEC).build().user_data(ud(K_ACCEPT, 0));
            if let Err(err) = self.push(e) {
                self.accept_armed = false;
                self.inflight -= 1;
                return Err(err);
            }
        }
        if !self.wake_armed {
            self.wake_armed = true;
            self.inflight += 1;
            let e = opcode::PollAdd::new(types::Fd(self.wake.as_raw_fd()), libc::POLLIN as u32).multi(true).build().user_data(ud(K_WAKE, 0));
            if let Err(err) = self.push(e) {
                self.wake_armed = false;
                self.inflight -= 1;
                return Err(err);
            }
        }
        self.push_deferred()?;
        self.flush_staged();
        let mut rearm = std::mem::take(&mut self.rearm);
        for &id in &rearm {
            self.arm_recv(id);
        }
        rearm.clear();
        self.rearm = rearm;
        // Closed connections whose last send does not finish: shut the socket down anyway.
        let mut force = Vec::new();
        for (&key, o) in self.orphans.iter_mut() {
            if !o.forced && now.duration_since(o.since) > CLOSE_LINGER {
                o.forced = true;
                // SAFETY: the socket stays open until the send completes; shutdown makes it
                // complete.
                unsafe { libc::shutdown(o.fd, libc::SHUT_RDWR) };
                force.push(key);
            }
        }
        for key in force {
            let e = opcode::AsyncCancel::new(send_ud(key)).build().user_data(ud(K_IGNORE, 0));
            let _ = self.push(e);
        }
        if let Some(r) = self.ring.as_mut() {
            r.bufs.publish();
        }
        let mut timeout = timeout.unwrap_or(Duration::from_secs(3600));
        if !self.again.is_empty() || !self.accepted.is_empty() || !self.marked.is_empty() || self.marked_wake {
            // Readiness already known (e.g. reaped by `submit` during the last write pass, which
            // also drained the wake-up eventfd): report it without sleeping.
            timeout = Duration::ZERO;
        }
        if let Some(t) = self.accept_retry {
            timeout = timeout.min(t.saturating_duration_since(now));
        }
        if !self.orphans.is_empty() {
            timeout = timeout.min(Duration::from_millis(250));
        }
        let ts = types::Timespec::new().sec(timeout.as_secs()).nsec(timeout.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        if let Some(r) = self.ring.as_mut() {
            match r.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)) => {}
                Err(e) => return Err(e),
            }
        }
        self.reap();
        if !self.accepted.is_empty() {
            out.push(Ready::Listener);
        }
        if std::mem::take(&mut self.marked_wake) {
            out.push(Ready::Wake);
        }
        let mut again = std::mem::take(&mut self.again);
        for &id in &again {
            self.mark(id, F_MARK_R);
        }
        again.clear();
        if self.again.is_empty() {
            self.again = again;
        }
        let mut marked = std::mem::take(&mut self.marked);
        for &id in &marked {
            if let Some(c) = self.conn_mut(id) {
                let m = c.flags & (F_MARK_R | F_MARK_W);
                c.flags &= !(F_MARK_R | F_MARK_W);
                if m != 0 {
                    out.push(Ready::Conn { id, readable: m & F_MARK_R != 0, writable: m & F_MARK_W != 0 });
                }
            }
        }
        marked.clear();
        if self.marked.is_empty() {
            self.marked = marked;
        }
        Ok(())
    }

    fn accept(&mut self, alloc: &mut dyn FnMut() -> ConnId) -> io::Result<Option<ConnId>> {
        let Some(fd) = self.accepted.pop_front() else { return Ok(None) };
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a pointer to a live int.
        unsafe {
            libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, (&one as *const libc::c_int).cast(), 4);
        }
        if let Some(n) = self.sndbuf {
            let n = n as libc::c_int;
            // SAFETY: as above.
            unsafe {
                libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, (&n as *const libc::c_int).cast(), 4);
            }
        }
        let id = alloc();
        self.accepts += 1;
        let i = id as usize;
        if self.conns.len() <= i {
            self.conns.resize(i + 1, Conn::FREE);
        }
        if self.conns[i].open() {
            // The hub reused an id the backend still had (should not happen): close the old one.
            self.close(id);
        }
        let gen = self.conns[i].gen.wrapping_add(1) & 0xFF_FFFF;
        self.conns[i] = Conn { fd, gen, flags: F_OPEN, ..Conn::FREE };
        self.arm_recv(id);
        Ok(Some(id))
    }

    fn read(&mut self, id: ConnId, buf: &mut [u8]) -> io::Result<usize> {
        let Some(r) = self.ring.as_mut() else { return Err(io::ErrorKind::NotConnected.into()) };
        let Some(c) = self.conns.get_mut(id as usize).filter(|c| c.open()) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let mut n = 0;
        let mut freed = false;
        while n < buf.len() && c.rx_head != NO_BUF {
            let bid = c.rx_head;
            let m = r.bufs.meta[bid as usize];
            // SAFETY: `bid` is in the connection's receive chain (`rx_head`): `on_cqe` chained it
            // there from a receive completion, and a buffer leaves the chain only when it is
            // pushed back to the ring (below, after its last byte is copied, and in `close`),
            // so the connection still holds it.
            let src = &unsafe { r.bufs.buf(bid) }[m.off as usize..m.len as usize];
            let k = src.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&src[..k]);
            n += k;
            if k == src.len() {
                c.rx_head = m.next;
                if m.next != NO_BUF {
                    r.bufs.meta[m.next as usize].last = m.last;
                }
                r.bufs.push(bid);
                freed = true;
            } else {
                r.bufs.meta[bid as usize].off += k as u16;
            }
        }
        if freed {
            r.bufs.publish();
        }
        if n > 0 {
            if c.rx_head == NO_BUF && (c.flags & F_EOF != 0 || c.err != 0) {
                self.again.push(id);
            }
            return Ok(n);
        }
        if c.err != 0 {
            return Err(io::Error::from_raw_os_error(c.err as i32));
        }
        if c.flags & F_EOF != 0 {
            return Ok(0);
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn writev(&mut self, id: ConnId, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some(c) = self.conns.get_mut(id as usize).filter(|c| c.open()) else { return Err(io::ErrorKind::NotConnected.into()) };
        if c.err != 0 {
            return Err(io::Error::from_raw_os_error(c.err as i32));
        }
        if c.flags & F_SENDING != 0 {
            c.flags |= F_WANT_W;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let tx = c.tx;
        if tx != NO_TX && tx & TX_SHARED == 0 && self.stage[tx as usize].len() >= STAGE_MAX {
            c.flags |= F_WANT_W;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        let (first, second) = (nonempty.next(), nonempty.next());
        let Some(first) = first else { return Ok(0) };
        let tx = if tx == NO_TX && second.is_none() && first.len() <= SHARE_MAX {
            // One small frame: send it from a shared copy.
            let i = self.share(first);
            TX_SHARED | i
        } else {
            let idx = if tx == NO_TX || tx & TX_SHARED != 0 { self.new_stage() } else { tx };
            if tx != NO_TX && tx & TX_SHARED != 0 {
                // More after a shared frame: the connection's own buffer starts with a copy.
                let i = (tx & !TX_SHARED) as usize;
                let (shared, stage) = (&self.shared, &mut self.stage);
                stage[idx as usize].extend_from_slice(&shared[i].bytes);
                self.release_tx(tx);
            }
            let v = &mut self.stage[idx as usize];
            let cap = v.capacity();
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(STAGE_MAX - v.len());
                v.extend_from_slice(&b[..k]);
                n += k;
                if k < b.len() {
                    break;
                }
            }
            self.allocated += v.capacity() - cap;
            let short = n < bufs.iter().map(|b| b.len()).sum::<usize>();
            let Some(c) = self.conn_mut(id) else { return Err(io::ErrorKind::NotConnected.into()) };
            c.tx = idx;
            if short {
                c.flags |= F_WANT_W;
            }
            if c.flags & F_IN_TO_SEND == 0 {
                c.flags |= F_IN_TO_SEND;
                self.to_send.push(id);
            }
            return Ok(n);
        };
        let Some(c) = self.conn_mut(id) else { return Err(io::ErrorKind::NotConnected.into()) };
        c.tx = tx;
        if c.flags & F_IN_TO_SEND == 0 {
            c.flags |= F_IN_TO_SEND;
            self.to_send.push(id);
        }
        Ok(first.len())
    }

    fn close(&mut self, id: ConnId) {
        let Some(c) = self.conn_mut(id).map(|c| *c) else { return };
        self.conns[id as usize] = Conn { gen: c.gen, ..Conn::FREE };
        if let Some(r) = self.ring.as_mut() {
            let mut b = c.rx_head;
            while b != NO_BUF {
                let next = r.bufs.meta[b as usize].next;
                r.bufs.push(b);
                b = next;
            }
            r.bufs.publish();
        }
        let key = conn_key(id, c.gen);
        let sending = c.flags & F_SENDING != 0;
        if sending {
            // Finish the send in flight, then close. Orphaned before anything below can reap:
            // a completion reaped while neither connection nor orphan knew the send was lost.
            self.orphans.insert(key, Orphan { tx: c.tx, fd: c.fd, since: Instant::now(), forced: false });
        }
        if c.flags & F_RECV_ARMED != 0 {
            let e = opcode::AsyncCancel::new(recv_ud(id, c.gen)).build().user_data(ud(K_IGNORE, 0));
            let _ = self.push(e);
        }
        if sending {
            return;
        }
        if c.tx != NO_TX && c.err == 0 {
            // Bytes the hub handed over (a close frame, an HTTP error): send them, then close.
            self.orphans.insert(key, Orphan { tx: c.tx, fd: c.fd, since: Instant::now(), forced: false });
            self.inflight += 1;
            if self.submit_send(key, c.fd, c.tx).is_err() {
                self.orphan_done(key);
            }
            return;
        }
        self.release_tx(c.tx);
        shutdown_close(c.fd);
    }

    fn conn_memory_bytes(&self) -> usize {
        self.conn_memory_bytes_impl()
    }

    fn trim(&mut self) {
        self.trim_impl()
    }

    /// Staged bytes become sends and go to the kernel now; completions so far are reaped.
    fn submit(&mut self) {
        if self.to_send.is_empty() {
            return;
        }
        self.flush_staged();
        if let Some(r) = self.ring.as_mut() {
            // Errors (EBUSY: completion queue full; EINTR) leave the entries queued for `wait`.
            let _ = r.ring.submit();
        }
        // Sends on sockets with room complete inline: reaping frees their connections for the
        // rest of the pass (readiness found here is reported by the next `wait`).
        self.reap();
    }

    fn fixed_memory_bytes(&self) -> usize {
        self.fixed_memory_bytes_impl()
    }

    fn notifier(&self) -> Notifier {
        let w = self.wake.clone();
        Notifier(Arc::new(move || {
            let one = 1u64;
            // SAFETY: writes 8 bytes from `one` to the eventfd, kept open by `w`.
            unsafe { libc::write(w.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }))
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        let conns = std::mem::take(&mut self.conns);
        for (id, c) in conns.iter().enumerate().filter(|(_, c)| c.open()) {
            // SAFETY: shutting down sockets we own ends their receives and sends.
            unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
            if c.flags & F_SENDING != 0 {
                // Closed when the send completes (below), like any orphan.
                let o = Orphan { tx: c.tx, fd: c.fd, since: Instant::now(), forced: true };
                self.orphans.insert(conn_key(id as ConnId, c.gen), o);
            } else {
                // SAFETY: owned fd, closed once.
                unsafe { libc::close(c.fd) };
            }
        }
        for fd in self.accepted.drain(..) {
            shutdown_close(fd);
        }
        if self.ring.is_none() {
            return;
        }
        for o in self.orphans.values() {
            // SAFETY: as above.
            unsafe { libc::shutdown(o.fd, libc::SHUT_RDWR) };
        }
        let _ = self.push_deferred();
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(ud(K_IGNORE, 0));
        let _ = self.push(cancel);
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.inflight > 0 && Instant::now() < deadline {
            let ts = types::Timespec::new().nsec(20_000_000);
            if let Some(r) = self.ring.as_mut() {
                let _ = r.ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&ts));
            }
            self.reap();
        }
        if self.inflight == 0 {
            if let Some(r) = self.ring.as_ref() {
                // Nothing uses the buffer ring any more: take it back from the kernel before its
                // mapping is freed (when `self.ring` drops, after this).
                let _ = r.ring.submitter().unregister_buf_ring(BGID);
            }
        } else {
            // The kernel may still use the buffers: leak them rather than free them under it.
            for (_, o) in self.orphans.drain() {
                // SAFETY: owned fd, closed once.
                unsafe { libc::close(o.fd) };
            }
            std::mem::forget(std::mem::take(&mut self.stage));
            std::mem::forget(std::mem::take(&mut self.shared));
            if let Some(r) = self.ring.take() {
                std::mem::forget(r.bufs);
                drop(r.ring);
            }
        }
        for fd in self.accepted.drain(..) {
            shutdown_close(fd);
        }
    }
}
