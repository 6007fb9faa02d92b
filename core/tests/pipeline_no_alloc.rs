//! After start and warm-up, the whole pipeline (producer send, engine agent, outbound ring,
//! consumer poll) allocates nothing: a counting global allocator sees zero allocations on any
//! thread while 20 000 commands flow through it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tickwire_core::pipeline::{Pipeline, PipelineConfig};
use tickwire_core::*;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn cmd(i: u64) -> Command {
    let side = if i & 1 == 0 { Side::Buy } else { Side::Sell };
    let account = 1 + (i % 4) as u32;
    let c = if i % 7 == 3 {
        Command::cancel(account, 1, i.saturating_sub(3).max(1))
    } else {
        Command::new_order(account, 1, i, side, OrderType::LimitGtc, Some(100 + (i % 5) as i64 - 2), 1 + i % 3, None)
    };
    Command { ts_ns: i, ..c }
}

#[test]
fn steady_state_pipeline_does_not_allocate() {
    const WARM: u64 = 3_000;
    const N: u64 = 20_000;
    let engine = EngineConfig { orders_max: 1 << 16, levels_max: 64, accounts_max: 16, ..EngineConfig::single_default() };
    let mut cfg = PipelineConfig::new(engine);
    cfg.inbound_capacity = 256;
    cfg.outbound_capacity = 512;
    let (pipeline, mut consumers) = Pipeline::start(cfg, 1).unwrap();
    let mut consumer = consumers.pop().unwrap();
    let done_cmds = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (d2, s2) = (done_cmds.clone(), stop.clone());
    let reader = std::thread::spawn(move || {
        let mut last_seq = 0u64;
        let mut cmds = 0u64;
        while !s2.load(Ordering::Acquire) {
            let n = consumer.poll(128, |e, _| {
                assert_eq!(e.seq, last_seq + 1, "gapless");
                last_seq = e.seq;
                if e.is_last_in_command() {
                    cmds += 1;
                }
            });
            if n == 0 {
                std::thread::sleep(Duration::from_micros(50));
            } else {
                d2.store(cmds, Ordering::Release);
            }
        }
        last_seq
    });
    let mut p = pipeline.producer();
    let wait_for = |target: u64| {
        let start = Instant::now();
        while done_cmds.load(Ordering::Acquire) < target {
            std::thread::sleep(Duration::from_micros(100));
            assert!(start.elapsed() < Duration::from_secs(180), "hang guard");
        }
    };
    for i in 1..=WARM {
        p.send(cmd(i));
    }
    wait_for(WARM);
    COUNTING.store(true, Ordering::SeqCst);
    for i in WARM + 1..=WARM + N {
        p.send(cmd(i));
    }
    wait_for(WARM + N);
    COUNTING.store(false, Ordering::SeqCst);
    let allocs = ALLOCS.load(Ordering::SeqCst);
    stop.store(true, Ordering::Release);
    let last_seq = reader.join().unwrap();
    let engine = pipeline.shutdown();
    assert_eq!(engine.last_cmd_seq(), WARM + N);
    assert_eq!(engine.next_event_seq(), last_seq + 1);
    assert_eq!(allocs, 0, "allocations on the pipeline's steady-state path");
}
