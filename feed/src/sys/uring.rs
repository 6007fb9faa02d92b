//! io_uring backend (Linux ≥ 6.0): the same readiness surface as `epoll.rs`, built on completions.
//!
//! - **Accept**: one multishot accept on the listener; accepted fds wait in a queue that
//!   [`Backend::accept`] hands out (re-armed if the kernel ends it, e.g. after EMFILE).
//! - **Receive**: one multishot receive per connection, with buffers the kernel picks from a
//!   provided-buffer ring (`BUF_COUNT` × `BUF_SIZE`, shared by every connection of the shard), so
//!   an idle connection owns no receive memory. Completed buffers wait per connection until the
//!   shard reads them (copied into its scratch buffer, then given back to the ring at once).
//! - **Send**: the hub lends its frames as `IoSlice`s only for the duration of a `writev` call,
//!   so the bytes are copied into a pooled per-connection staging buffer (the kernel would copy
//!   them into the socket buffer anyway; with 64-byte frames this is a small memcpy next to the
//!   syscall it replaces). At the next `wait`, every staged buffer becomes one `SEND` SQE
//!   (`MSG_WAITALL`, so a full socket parks the request in the kernel instead of returning a short
//!   count). While a send is in flight `writev` reports `WouldBlock`, so frames stay in the hub's
//!   queue and its outbound budget (conflate / disconnect) works as with epoll; the completion is
//!   reported as writability.
//! - **One submission per loop iteration**: every SQE produced during an iteration (sends,
//!   re-arms, cancels) goes to the kernel in the same `io_uring_enter` that waits for the next
//!   completions (more only if the submission queue fills up).
//! - **Close**: a connection with data still staged or in flight is closed when that send
//!   completes (or after `CLOSE_LINGER`), like a socket close after a write lets the kernel
//!   finish sending; then `shutdown` + `close`, and the receive is cancelled.
//! - Zero-copy send (`SEND_ZC`) is not used: the frames are tiny and it needs a second
//!   completion per send plus pinned buffers.
//!
//! The ring is created on the first `wait`, i.e. on the shard's own thread, so it can be a
//! single-issuer ring with deferred task work (completions run only when the shard asks).

use super::{Backend, Notifier, Ready};
use crate::hub::ConnId;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Entries of the submission queue (more SQEs in one iteration cause intermediate submits).
const SQ_ENTRIES: u32 = 4096;
/// Entries of the completion queue.
const CQ_ENTRIES: u32 = 65_536;
/// Receive buffers of the shard (a power of two): the most the provided-buffer ring holds.
const BUF_COUNT: u16 = 1024;
/// Size of one receive buffer (client input is small: upgrade requests, subscriptions, pings).
const BUF_SIZE: usize = 1024;
/// Buffers kept in the provided-buffer ring at first; doubled (up to `BUF_COUNT`) each time a
/// receive finds it empty. Given-back buffers are reused most-recent first, so only the buffers
/// a shard ever needed at once are touched (resident), not all `BUF_COUNT`.
const BUF_STOCK_MIN: u16 = 64;
/// Buffer group id of the ring.
const BGID: u16 = 7;
/// Most bytes staged for one connection before `writev` reports a full socket.
const STAGE_MAX: usize = 256 * 1024;
/// Staging buffers kept for reuse while busy.
const POOL_MAX: usize = 4096;
/// Staging buffers kept through an idle trim (see `TRIM_EVERY`).
const POOL_KEEP: usize = 64;
/// Staging buffers larger than this are not kept in the pool.
const POOL_BUF_MAX: usize = 16 * 1024;

/// How long a closed connection's last send may take before the socket is shut down anyway.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

// user_data: kind in the top 4 bits.
const K_ACCEPT: u64 = 1;
const K_WAKE: u64 = 2;
const K_RECV: u64 = 3;
const K_SEND: u64 = 4;
const K_IGNORE: u64 = 5;

fn ud(kind: u64, payload: u64) -> u64 {
    (kind << 60) | (payload & ((1 << 60) - 1))
}

fn recv_ud(id: ConnId, gen: u32) -> u64 {
    ud(K_RECV, ((gen as u64 & 0xFF_FFFF) << 32) | id as u64)
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

/// The provided-buffer ring: `count` entries (page-aligned, shared with the kernel) and the
/// buffers they point to.
struct BufRing {
    entries: *mut types::BufRingEntry,
    count: u16,
    size: usize,
    tail: u16,
    mem: Box<[u8]>,
    /// Buffers neither in the ring nor held by a connection; the last given back on top.
    free: Vec<u16>,
    /// Buffers published to the kernel and not yet seen in a completion.
    stock: u16,
    /// How many buffers to keep in the ring.
    target: u16,
}

// SAFETY: the raw pointer is owned memory used only by the thread that owns the backend.
unsafe impl Send for BufRing {}

impl BufRing {
    fn layout(count: u16) -> std::alloc::Layout {
        let bytes = (count as usize * std::mem::size_of::<types::BufRingEntry>()).max(4096);
        std::alloc::Layout::from_size_align(bytes, 4096).expect("valid layout")
    }

    fn new(count: u16, size: usize) -> io::Result<BufRing> {
        assert!(count.is_power_of_two());
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(BufRing::layout(count)) };
        if p.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut r = BufRing {
            entries: p.cast(),
            count,
            size,
            tail: 0,
            mem: vec![0u8; count as usize * size].into_boxed_slice(),
            free: (0..count).rev().collect(),
            stock: 0,
            target: BUF_STOCK_MIN.min(count),
        };
        r.refill();
        r.publish();
        Ok(r)
    }

    fn ring_addr(&self) -> u64 {
        self.entries as u64
    }

    /// A buffer came back from a connection (or unused from a completion).
    fn give_back(&mut self, bid: u16) {
        self.free.push(bid);
    }

    /// The kernel used one published buffer (a completion carried it).
    fn taken(&mut self) {
        self.stock = self.stock.saturating_sub(1);
    }

    /// A receive found the ring empty: keep more buffers in it.
    fn grow(&mut self) {
        self.target = self.target.saturating_mul(2).min(self.count);
    }

    /// Tops the ring up to `target` from the most recently given-back buffers (visible after
    /// [`BufRing::publish`]).
    fn refill(&mut self) {
        while self.stock < self.target {
            let Some(bid) = self.free.pop() else { break };
            self.push(bid);
            self.stock += 1;
        }
    }

    /// Puts buffer `bid` in the ring (visible after [`BufRing::publish`]).
    fn push(&mut self, bid: u16) {
        let i = (self.tail & (self.count - 1)) as usize;
        // SAFETY: `i < count`, inside the allocation; the kernel only reads entries between its
        // head and the published tail, and this one is past the published tail.
        let e = unsafe { &mut *self.entries.add(i) };
        e.set_addr(self.mem[bid as usize * self.size..].as_ptr() as u64);
        e.set_len(self.size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Refills, then publishes the pushed entries to the kernel.
    fn publish(&mut self) {
        self.refill();
        // SAFETY: `entries` is the ring's base; the tail field overlays entry 0's `resv`, which
        // the kernel reads with acquire semantics.
        let tail = unsafe { types::BufRingEntry::tail(self.entries) } as *const std::sync::atomic::AtomicU16;
        // SAFETY: aligned u16 inside the live allocation.
        unsafe { &*tail }.store(self.tail, std::sync::atomic::Ordering::Release);
    }

    fn buf(&self, bid: u16) -> &[u8] {
        &self.mem[bid as usize * self.size..(bid as usize + 1) * self.size]
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.entries.cast(), BufRing::layout(self.count)) }
    }
}

struct Conn {
    fd: RawFd,
    gen: u32,
    /// Received buffers not yet read: (buffer id, length, bytes already read).
    bufs: VecDeque<(u16, u32, u32)>,
    eof: bool,
    err: Option<i32>,
    recv_armed: bool,
    /// Send slot in flight.
    sending: Option<u32>,
    /// Bytes written by the hub, sent at the next `wait`.
    staged: Vec<u8>,
    in_to_send: bool,
    /// Readiness gathered during the current `wait` (bit 0 readable, bit 1 writable).
    mark: u8,
}

struct SendOp {
    buf: Vec<u8>,
    off: usize,
    fd: RawFd,
    /// The connection (and its generation) while it is still open.
    owner: Option<(ConnId, u32)>,
    /// Close `fd` when the send completes.
    close_after: bool,
    since: Instant,
    forced: bool,
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
    conns: Vec<Option<Conn>>,
    gens: Vec<u32>,
    accepted: VecDeque<RawFd>,
    accept_armed: bool,
    accept_retry: Option<Instant>,
    wake_armed: bool,
    sends: Vec<Option<SendOp>>,
    free_sends: Vec<u32>,
    closing: Vec<u32>,
    to_send: Vec<ConnId>,
    rearm: Vec<ConnId>,
    again: Vec<ConnId>,
    marked: Vec<ConnId>,
    marked_wake: bool,
    pool: Vec<Vec<u8>>,
    cqes: Vec<(u64, i32, u32)>,
    /// Operations whose last completion has not arrived (multishots armed, sends in flight).
    inflight: usize,
    /// Send slots in use.
    live_sends: usize,
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
            gens: Vec::new(),
            accepted: VecDeque::new(),
            accept_armed: false,
            accept_retry: None,
            wake_armed: false,
            sends: Vec::new(),
            free_sends: Vec::new(),
            closing: Vec::new(),
            to_send: Vec::new(),
            rearm: Vec::new(),
            again: Vec::new(),
            marked: Vec::new(),
            marked_wake: false,
            pool: Vec::new(),
            cqes: Vec::new(),
            inflight: 0,
            live_sends: 0,
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
            // SAFETY: every buffer an SQE points to (send staging buffers in `sends`, the buffer
            // ring) stays alive and unmoved until its final completion is reaped.
            if unsafe { r.ring.submission().push(&e) }.is_ok() {
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

    fn arm_recv(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) else { return };
        if c.recv_armed || c.eof || c.err.is_some() {
            return;
        }
        c.recv_armed = true;
        let e = opcode::RecvMulti::new(types::Fd(c.fd), BGID).build().user_data(recv_ud(id, c.gen));
        self.inflight += 1;
        if self.push(e).is_err() {
            self.inflight -= 1;
            if let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) {
                c.recv_armed = false;
                c.err = Some(libc::ENOMEM);
            }
            self.again.push(id);
        }
    }

    fn mark(&mut self, id: ConnId, bits: u8) {
        if let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) {
            if c.mark == 0 {
                self.marked.push(id);
            }
            c.mark |= bits;
        }
    }

    fn recycle(&mut self, bid: u16) {
        if let Some(r) = self.ring.as_mut() {
            r.bufs.give_back(bid);
        }
    }

    /// Gives back the memory of burst-sized tables (send slots when none is in flight, staging
    /// pool beyond `POOL_KEEP`, completion and id lists): called by the shard every tick, so a
    /// heartbeat or a connection storm leaves no memory proportional to the connections behind,
    /// while the busy path keeps its buffers between ticks.
    fn trim_impl(&mut self) {
        if self.live_sends == 0 {
            self.sends = Vec::new();
            self.free_sends = Vec::new();
        }
        self.pool.truncate(POOL_KEEP);
        self.pool.shrink_to_fit();
        for v in [&mut self.to_send, &mut self.rearm, &mut self.again, &mut self.marked] {
            if v.is_empty() {
                *v = Vec::new();
            }
        }
        self.cqes = Vec::new();
        if self.accepted.is_empty() {
            self.accepted = VecDeque::new();
        }
    }

    /// Bytes this backend holds for its connections (sizes and capacities): the connection and
    /// generation tables, received buffers waiting per connection (their queue entries; the
    /// buffers belong to the shared ring), staging buffers, send slots, the staging pool and the
    /// id / completion lists. The provided-buffer ring is per shard (`fixed_memory_bytes`).
    fn conn_memory_bytes_impl(&self) -> usize {
        use std::mem::size_of;
        let mut n = self.conns.capacity() * size_of::<Option<Conn>>() + self.gens.capacity() * 4;
        for c in self.conns.iter().flatten() {
            n += c.bufs.capacity() * size_of::<(u16, u32, u32)>() + c.staged.capacity();
        }
        n += self.sends.capacity() * size_of::<Option<SendOp>>() + self.free_sends.capacity() * 4;
        n += self.sends.iter().flatten().map(|op| op.buf.capacity()).sum::<usize>();
        n += self.pool.capacity() * size_of::<Vec<u8>>() + self.pool.iter().map(|b| b.capacity()).sum::<usize>();
        let ids = self.closing.capacity() + self.to_send.capacity() + self.rearm.capacity() + self.again.capacity() + self.marked.capacity();
        n += ids * 4 + self.accepted.capacity() * 4 + self.cqes.capacity() * size_of::<(u64, i32, u32)>();
        n
    }

    /// Per-shard bytes: the receive buffers (allocated, resident only once used), the ring of
    /// buffer entries. The SQ/CQ rings are kernel memory mapped at setup.
    fn fixed_memory_bytes_impl(&self) -> usize {
        (BUF_COUNT as usize) * BUF_SIZE + BufRing::layout(BUF_COUNT).size()
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

    /// Submits `buf` (from `off`) on `fd` as send slot `slot`.
    fn submit_send(&mut self, slot: u32) -> io::Result<()> {
        let Some(op) = self.sends[slot as usize].as_ref() else { return Ok(()) };
        let rest = &op.buf[op.off..];
        let e = opcode::Send::new(types::Fd(op.fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_WAITALL | libc::MSG_NOSIGNAL)
            .build()
            .user_data(ud(K_SEND, slot as u64));
        self.push(e)
    }

    fn new_send(&mut self, op: SendOp) -> u32 {
        self.inflight += 1;
        self.live_sends += 1;
        if let Some(s) = self.free_sends.pop() {
            self.sends[s as usize] = Some(op);
            s
        } else {
            self.sends.push(Some(op));
            (self.sends.len() - 1) as u32
        }
    }

    /// Staged bytes of every connection become one send each.
    fn flush_staged(&mut self) {
        let ids = std::mem::take(&mut self.to_send);
        for &id in &ids {
            let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) else { continue };
            c.in_to_send = false;
            if c.staged.is_empty() || c.sending.is_some() {
                continue;
            }
            let (fd, gen) = (c.fd, c.gen);
            let buf = std::mem::take(&mut c.staged);
            let slot = self.new_send(SendOp { buf, off: 0, fd, owner: Some((id, gen)), close_after: false, since: Instant::now(), forced: false });
            if let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) {
                c.sending = Some(slot);
            }
            if let Err(e) = self.submit_send(slot) {
                self.finish_send(slot, -errno_of(&e));
            }
        }
        let mut ids = ids;
        ids.clear();
        if self.to_send.is_empty() {
            self.to_send = ids;
        }
    }

    /// A send slot's completion (`res` bytes or -errno).
    fn on_send(&mut self, slot: u32, res: i32) {
        let Some(op) = self.sends.get_mut(slot as usize).and_then(|s| s.as_mut()) else { return };
        if res > 0 {
            op.off += res as usize;
            if op.off < op.buf.len() && !op.forced {
                // Short send (interrupted): send the rest.
                if let Err(e) = self.submit_send(slot) {
                    self.finish_send(slot, -errno_of(&e));
                }
                return;
            }
        }
        self.finish_send(slot, res.min(0));
    }

    fn finish_send(&mut self, slot: u32, err: i32) {
        let Some(op) = self.sends.get_mut(slot as usize).and_then(|s| s.take()) else { return };
        self.inflight -= 1;
        self.live_sends -= 1;
        self.free_sends.push(slot);
        if let Some((id, gen)) = op.owner {
            if let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) {
                if c.gen == gen {
                    c.sending = None;
                    if err < 0 && err != -libc::ECANCELED {
                        c.err.get_or_insert(-err);
                        self.mark(id, 1);
                    } else {
                        self.mark(id, 2);
                    }
                }
            }
        }
        if op.close_after {
            shutdown_close(op.fd);
            if let Some(p) = self.closing.iter().position(|&s| s == slot) {
                self.closing.swap_remove(p);
            }
        }
        self.give_buf(op.buf);
    }

    /// Reaps every completion and turns it into state.
    fn reap(&mut self) {
        let Some(r) = self.ring.as_mut() else { return };
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(r.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
        for &(u, res, flags) in &cqes {
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
                    let id = (u & 0xFFFF_FFFF) as ConnId;
                    let gen = ((u >> 32) & 0xFF_FFFF) as u32;
                    if !more {
                        self.inflight -= 1;
                    }
                    let bid = cqueue::buffer_select(flags);
                    if bid.is_some() {
                        if let Some(r) = self.ring.as_mut() {
                            r.bufs.taken();
                        }
                    }
                    let live = matches!(self.conns.get(id as usize), Some(Some(c)) if c.gen & 0xFF_FFFF == gen);
                    if !live {
                        if let Some(b) = bid {
                            self.recycle(b);
                        }
                        continue;
                    }
                    let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) else { continue };
                    if !more {
                        c.recv_armed = false;
                    }
                    if res > 0 {
                        if let Some(b) = bid {
                            c.bufs.push_back((b, res as u32, 0));
                        }
                        if !more {
                            self.rearm.push(id);
                        }
                    } else if res == 0 {
                        c.eof = true;
                        if let Some(b) = bid {
                            self.recycle(b);
                        }
                    } else if res == -libc::ENOBUFS {
                        // Out of provided buffers: keep more in the ring, arm again.
                        if let Some(r) = self.ring.as_mut() {
                            r.bufs.grow();
                        }
                        self.rearm.push(id);
                    } else if res != -libc::ECANCELED {
                        c.err.get_or_insert(-res);
                    }
                    self.mark(id, 1);
                }
                K_SEND => self.on_send((u & 0xFFFF_FFFF) as u32, res),
                _ => {}
            }
        }
        cqes.clear();
        self.cqes = cqes;
        if let Some(r) = self.ring.as_mut() {
            r.bufs.publish();
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
        self.flush_staged();
        let rearm = std::mem::take(&mut self.rearm);
        for &id in &rearm {
            self.arm_recv(id);
        }
        self.rearm = rearm;
        self.rearm.clear();
        // Closed connections whose last send does not finish: shut the socket down anyway.
        for i in 0..self.closing.len() {
            let slot = self.closing[i];
            if let Some(op) = self.sends.get_mut(slot as usize).and_then(|s| s.as_mut()) {
                if !op.forced && now.duration_since(op.since) > CLOSE_LINGER {
                    op.forced = true;
                    // SAFETY: the socket stays open until the send completes; shutdown makes it
                    // complete.
                    unsafe { libc::shutdown(op.fd, libc::SHUT_RDWR) };
                    let e = opcode::AsyncCancel::new(ud(K_SEND, slot as u64)).build().user_data(ud(K_IGNORE, 0));
                    let _ = self.push(e);
                }
            }
        }
        if let Some(r) = self.ring.as_mut() {
            r.bufs.publish();
        }
        let mut timeout = timeout.unwrap_or(Duration::from_secs(3600));
        if !self.again.is_empty() || !self.accepted.is_empty() {
            timeout = Duration::ZERO;
        }
        if let Some(t) = self.accept_retry {
            timeout = timeout.min(t.saturating_duration_since(now));
        }
        if !self.closing.is_empty() {
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
        for id in std::mem::take(&mut self.again) {
            self.mark(id, 1);
        }
        for id in std::mem::take(&mut self.marked) {
            if let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) {
                let m = std::mem::take(&mut c.mark);
                if m != 0 {
                    out.push(Ready::Conn { id, readable: m & 1 != 0, writable: m & 2 != 0 });
                }
            }
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
        let i = id as usize;
        if self.conns.len() <= i {
            self.conns.resize_with(i + 1, || None);
            self.gens.resize(i + 1, 0);
        }
        if let Some(old) = self.conns[i].take() {
            // The hub reused an id the backend still had (should not happen): drop the old one.
            shutdown_close(old.fd);
        }
        self.gens[i] = self.gens[i].wrapping_add(1) & 0xFF_FFFF;
        self.conns[i] = Some(Conn {
            fd,
            gen: self.gens[i],
            bufs: VecDeque::new(),
            eof: false,
            err: None,
            recv_armed: false,
            sending: None,
            staged: Vec::new(),
            in_to_send: false,
            mark: 0,
        });
        self.arm_recv(id);
        Ok(Some(id))
    }

    fn read(&mut self, id: ConnId, buf: &mut [u8]) -> io::Result<usize> {
        let Some(r) = self.ring.as_mut() else { return Err(io::ErrorKind::NotConnected.into()) };
        let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let mut n = 0;
        let mut freed = false;
        while n < buf.len() {
            let Some(&mut (bid, len, ref mut off)) = c.bufs.front_mut() else { break };
            let src = &r.bufs.buf(bid)[*off as usize..len as usize];
            let k = src.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&src[..k]);
            n += k;
            *off += k as u32;
            if *off == len {
                c.bufs.pop_front();
                r.bufs.give_back(bid);
                freed = true;
            }
        }
        if c.bufs.is_empty() && c.bufs.capacity() > 0 {
            c.bufs = VecDeque::new(); // an idle connection holds no receive entries
        }
        if freed {
            r.bufs.publish();
        }
        if n > 0 {
            if c.bufs.is_empty() && (c.eof || c.err.is_some()) {
                self.again.push(id);
            }
            return Ok(n);
        }
        if let Some(e) = c.err {
            return Err(io::Error::from_raw_os_error(e));
        }
        if c.eof {
            return Ok(0);
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn writev(&mut self, id: ConnId, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let pooled = if matches!(self.conns.get(id as usize), Some(Some(c)) if c.staged.capacity() == 0) { self.take_buf() } else { Vec::new() };
        let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if let Some(e) = c.err {
            return Err(io::Error::from_raw_os_error(e));
        }
        if c.sending.is_some() || c.staged.len() >= STAGE_MAX {
            self.give_buf(pooled);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if c.staged.capacity() == 0 {
            c.staged = pooled;
        }
        let mut n = 0;
        for b in bufs {
            let k = b.len().min(STAGE_MAX - c.staged.len());
            c.staged.extend_from_slice(&b[..k]);
            n += k;
            if k < b.len() {
                break;
            }
        }
        if !c.in_to_send && n > 0 {
            c.in_to_send = true;
            self.to_send.push(id);
        }
        Ok(n)
    }

    fn close(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.take()) else { return };
        for &(bid, _, _) in &c.bufs {
            self.recycle(bid);
        }
        if let Some(r) = self.ring.as_mut() {
            r.bufs.publish();
        }
        if c.recv_armed {
            let e = opcode::AsyncCancel::new(recv_ud(id, c.gen)).build().user_data(ud(K_IGNORE, 0));
            let _ = self.push(e);
        }
        if let Some(slot) = c.sending {
            // Finish the send in flight, then close.
            if let Some(op) = self.sends.get_mut(slot as usize).and_then(|s| s.as_mut()) {
                op.owner = None;
                op.close_after = true;
                op.since = Instant::now();
                self.closing.push(slot);
                self.give_buf(c.staged);
                return;
            }
        }
        if !c.staged.is_empty() && c.err.is_none() {
            // Bytes the hub handed over (a close frame, an HTTP error): send them, then close.
            let slot = self.new_send(SendOp { buf: c.staged, off: 0, fd: c.fd, owner: None, close_after: true, since: Instant::now(), forced: false });
            self.closing.push(slot);
            if let Err(e) = self.submit_send(slot) {
                self.finish_send(slot, -errno_of(&e));
            }
            return;
        }
        self.give_buf(c.staged);
        shutdown_close(c.fd);
    }

    fn conn_memory_bytes(&self) -> usize {
        self.conn_memory_bytes_impl()
    }

    fn trim(&mut self) {
        self.trim_impl()
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
        for c in conns.into_iter().flatten() {
            // SAFETY: shutting down sockets we own ends their receives and sends.
            unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
            match c.sending.and_then(|s| self.sends.get_mut(s as usize)).and_then(|s| s.as_mut()) {
                Some(op) => op.close_after = true,
                // SAFETY: owned fd, closed once (in-flight sends close theirs on completion).
                None => unsafe {
                    libc::close(c.fd);
                },
            }
        }
        for fd in self.accepted.drain(..) {
            shutdown_close(fd);
        }
        if self.ring.is_none() {
            return;
        }
        for op in self.sends.iter().flatten() {
            // SAFETY: as above.
            unsafe { libc::shutdown(op.fd, libc::SHUT_RDWR) };
        }
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
        if self.inflight > 0 {
            // The kernel may still use the buffers: leak them rather than free them under it.
            for op in self.sends.drain(..).flatten() {
                // SAFETY: owned fd, closed once.
                unsafe { libc::close(op.fd) };
                std::mem::forget(op.buf);
            }
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
