//! The engine's matching path never allocates: a counting global allocator watches 1,000,000
//! mixed commands (new orders of every type, cancels, replaces, mass cancels, halts) after a
//! warm-up. Commands are generated and the event sink is preallocated before counting starts.
//!
//! This binary holds exactly one test, and the allocator only counts allocations made by the
//! thread that armed it, so the test harness's own threads cannot disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use tickwire_core::{
    CancelReason, Command, Engine, EngineConfig, Event, EventKind, EventSink, InstrumentConfig, OrderType, Side,
    StpMode,
};

struct CountingAlloc;

/// Allocations (alloc, alloc_zeroed, realloc) and deallocations made by an armed thread.
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static DEALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Whether this thread's allocations are counted. Const-initialised, no destructor: reading
    /// it never allocates.
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn armed() -> bool {
    ARMED.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counters
// are plain atomics and the thread-local read cannot allocate or unwind.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if armed() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if armed() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if armed() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if armed() {
            DEALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// A sink over a preallocated buffer that never grows: an event that does not fit is counted
/// as an overflow (which fails the test) instead of being pushed.
struct FixedSink {
    buf: Vec<Event>,
    overflow: u64,
    events: u64,
    fills: u64,
    rejects: u64,
}

impl FixedSink {
    fn with_capacity(n: usize) -> FixedSink {
        FixedSink { buf: Vec::with_capacity(n), overflow: 0, events: 0, fills: 0, rejects: 0 }
    }
}

impl EventSink for FixedSink {
    fn push(&mut self, ev: &Event) {
        self.events += 1;
        self.fills += (ev.kind == EventKind::Fill as u8) as u64;
        self.rejects += (ev.kind == EventKind::Rejected as u8) as u64;
        if self.buf.len() < self.buf.capacity() {
            self.buf.push(*ev);
        } else {
            self.overflow += 1;
        }
    }
}

/// xorshift64*: small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const ACCOUNTS: u64 = 16;
const IDS: u64 = 64;

fn config() -> EngineConfig {
    let mut i2 = InstrumentConfig::simple(2, "TICK5");
    i2.tick_size = 5;
    i2.lot_size = 10;
    i2.min_qty = 10;
    i2.max_qty = 100_000;
    i2.price_band_bps = Some(1000);
    i2.reference_price = Some(1000);
    EngineConfig {
        instruments: vec![InstrumentConfig::simple(1, "PLAIN"), i2],
        orders_max: 1 << 15, // above ACCOUNTS * IDS: live ids bound the live orders
        levels_max: 1 << 10,
        accounts_max: 64,
        default_stp: StpMode::None,
        account_stp: vec![
            (1, StpMode::CancelTaker),
            (2, StpMode::CancelMaker),
            (3, StpMode::CancelBoth),
            (4, StpMode::DecrementAndCancel),
        ],
    }
}

/// A mixed stream: ~55 % new orders of every type, 18 % cancels, 22 % replaces, the rest mass
/// cancels and halt/resume pairs. Ids come from a small space so cancels and replaces hit.
fn commands(rng: &mut Rng, n: usize, first_seq: u64) -> Vec<Command> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let seq = first_seq + i as u64;
        let inst = if rng.below(4) == 0 { 2 } else { 1 };
        let (base, tick, lot) = if inst == 2 { (1000i64, 5i64, 10u64) } else { (1000, 1, 1) };
        let account = 1 + rng.below(ACCOUNTS) as u32;
        let id = 1 + rng.below(IDS);
        let side = if rng.below(2) == 0 { Side::Buy } else { Side::Sell };
        // Bids mostly below, asks mostly above the base, overlapping by two ticks: a deep book
        // that still crosses often.
        let offset = rng.below(15) as i64;
        let price = match side {
            Side::Buy => base + (offset - 12) * tick,
            Side::Sell => base + (offset - 2) * tick,
        };
        let qty = (1 + rng.below(20)) * lot;
        let roll = rng.below(100);
        let cmd = match roll {
            0..=54 => {
                let ot = match rng.below(10) {
                    0..=3 => OrderType::LimitGtc,
                    4..=5 => OrderType::PostOnly,
                    6 => OrderType::LimitIoc,
                    7 => OrderType::LimitFok,
                    _ => OrderType::Market,
                };
                let p = match ot {
                    OrderType::Market if rng.below(2) == 0 => None,
                    _ => Some(price),
                };
                let stp = match rng.below(8) {
                    0 => Some(StpMode::ALL[rng.below(5) as usize]),
                    _ => None,
                };
                Command::new_order(account, inst, id, side, ot, p, qty, stp)
            }
            55..=72 => Command::cancel(account, inst, id),
            73..=94 => {
                let p = if rng.below(2) == 0 { None } else { Some(price) };
                Command::replace(account, inst, id, p, qty)
            }
            95..=96 => {
                let which = if rng.below(2) == 0 { None } else { Some(inst) };
                Command::mass_cancel(account, which, CancelReason::MassCancel)
            }
            // Halts are short: most of these are resumes.
            _ => Command::set_halted(inst, rng.below(8) == 0),
        };
        v.push(cmd.with_seq(seq, seq * 10));
    }
    v
}

#[test]
fn matching_path_does_not_allocate() {
    const WARMUP: usize = 200_000;
    const MEASURED: usize = 1_000_000;

    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let warmup = commands(&mut rng, WARMUP, 1);
    let measured = commands(&mut rng, MEASURED, 1 + WARMUP as u64);
    let mut engine = Engine::new(&config()).expect("valid config");
    let mut sink = FixedSink::with_capacity(1 << 16);

    for c in &warmup {
        sink.buf.clear();
        engine.handle(c, &mut sink);
    }
    let (events0, fills0, rejects0) = (sink.events, sink.fills, sink.rejects);

    ARMED.with(|a| a.set(true));
    for c in &measured {
        sink.buf.clear();
        engine.handle(c, &mut sink);
    }
    ARMED.with(|a| a.set(false));

    let allocs = ALLOCS.load(Ordering::Relaxed);
    let deallocs = DEALLOCS.load(Ordering::Relaxed);
    let (events, fills, rejects) = (sink.events - events0, sink.fills - fills0, sink.rejects - rejects0);
    assert_eq!(sink.overflow, 0, "sink buffer too small for one command's events");
    assert_eq!(
        (allocs, deallocs),
        (0, 0),
        "engine allocated during {MEASURED} commands ({events} events, {fills} fills)"
    );
    // The stream really exercised the book.
    assert!(events > MEASURED as u64, "only {events} events");
    assert!(fills > MEASURED as u64 / 20, "only {fills} fills");
    assert!(rejects < events / 2, "{rejects} rejects of {events} events");
    assert!(engine.resting_orders() > 0);
}
