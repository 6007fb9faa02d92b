//! Loom models of the ring protocols, with tiny capacities so every interleaving (within the
//! preemption bound) is explored in well under a minute. Run:
//!
//! ```text
//! CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" \
//!     timeout 900 cargo test -p tickwire-core --release --lib ring::
//! ```
//!
//! Checked by mutation (each change below makes at least one model fail): the single producer's
//! cursor publish weakened to Relaxed (both SP models); the slot's final stamp store weakened to
//! Relaxed (both MP models and the lossy model); the seqlock's second stamp check removed (lossy
//! model); either SeqCst fence of the doorbell protocol removed (`doorbell_ring_is_never_lost`).
//! Not detectable with loom: weakening a consumer's `Sequence::set` (gating) to Relaxed,
//! because the hazard it prevents, a read returning a value stored after it by the overwriting
//! producer, is load buffering, which loom does not model; that pairing is argued in the comments
//! of `Consumer::poll` and `SingleProducer::has_space_for`.
//!
//! Loom's target dir must not be shared with another checkout of this crate: cargo may then reuse
//! the other checkout's test binary.

use super::*;
use loom::thread;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

/// Single producer, capacity 2, three records (the third waits for the consumer to free a
/// slot): the consumer sees 1, 2, 3 in order with their values, never a stale slot.
#[test]
fn sp_publish_consume_wraps() {
    model(|| {
        let ring = RingBuffer::<u64>::heap(2).unwrap();
        let (mut p, mut cs) = ring.into_single_producer(1, WaitStrategyKind::BusySpin);
        let mut c = cs.pop().unwrap();
        let t = thread::spawn(move || {
            for s in 1..=3u64 {
                assert_eq!(p.push(&(s * 10)), s);
                p.publish();
            }
        });
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let n = c.poll(8, |v, s, _| {
                assert_eq!(*v, s * 10, "record {s} read before it was written or after reuse");
                seen.push(s);
            });
            if n == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(seen, vec![1, 2, 3]);
        t.join().unwrap();
    });
}

/// Batch publish: two records published with one cursor store; the consumer's batch ends at the
/// last available record.
#[test]
fn sp_batch_end_of_batch() {
    model(|| {
        let ring = RingBuffer::<u64>::heap(2).unwrap();
        let (mut p, mut cs) = ring.into_single_producer(1, WaitStrategyKind::BusySpin);
        let mut c = cs.pop().unwrap();
        let t = thread::spawn(move || {
            p.push(&7);
            p.push(&8);
            p.publish();
        });
        let mut got = Vec::new();
        while got.len() < 2 {
            c.poll(8, |v, s, end| got.push((s, *v, end)));
            thread::yield_now();
        }
        assert_eq!(got, vec![(1, 7, false), (2, 8, true)], "one batch of both records");
        t.join().unwrap();
    });
}

/// Two producers (a spawned thread and the main thread), capacity 2, one record each, and a
/// consumer thread: every record arrives exactly once, in sequence order, with the value its
/// producer wrote for that sequence. (The consumer runs on its own thread: loom explores stale
/// reads of the record far better that way.)
#[test]
fn mp_two_producers_exactly_once_in_order() {
    model(|| {
        let ring = RingBuffer::<u64>::heap(2).unwrap();
        let (mut p, mut cs) = ring.into_multi_producer(1, WaitStrategyKind::BusySpin);
        let mut c = cs.pop().unwrap();
        let consumer = thread::spawn(move || {
            let mut seen = Vec::new();
            while seen.len() < 2 {
                c.poll(8, |v, s, _| {
                    assert_eq!(*v / 10, s, "record {s} seen before its producer finished writing it");
                    seen.push(*v);
                });
                thread::yield_now();
            }
            seen
        });
        let mut p2 = p.clone();
        let other = thread::spawn(move || p2.send_with(|s| s * 10 + 1));
        let mine = p.send_with(|s| s * 10);
        let theirs = other.join().unwrap();
        let seen = consumer.join().unwrap();
        let mut ids: Vec<u64> = seen.iter().map(|v| v % 10).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![0, 1], "each producer's record exactly once");
        let mut seqs = vec![mine, theirs];
        seqs.sort_unstable();
        assert_eq!(seqs, vec![1, 2]);
    });
}

/// Multi producer wrapping a capacity-2 ring: the producer waiting for space never overwrites a
/// record the consumer has not read, and the consumer never reads a record before it is written.
#[test]
fn mp_wrap_respects_gating() {
    model(|| {
        let ring = RingBuffer::<u64>::heap(2).unwrap();
        let (mut p, mut cs) = ring.into_multi_producer(1, WaitStrategyKind::BusySpin);
        let mut c = cs.pop().unwrap();
        let consumer = thread::spawn(move || {
            let mut next = 1;
            while next <= 3 {
                c.poll(8, |v, s, _| {
                    assert_eq!(s, next);
                    assert_eq!(*v, s * 100);
                    next += 1;
                });
                thread::yield_now();
            }
        });
        for _ in 0..3 {
            p.send_with(|s| s * 100);
        }
        consumer.join().unwrap();
    });
}

/// Lossy reader against a writer that laps it (capacity 2, three two-word records, no gating):
/// a read returns the untorn record 1, or nothing yet, or reports the lap; never a mixed copy.
#[test]
fn lossy_reader_detects_lap_never_torn() {
    model(|| {
        let ring = RingBuffer::<[u64; 2]>::heap(2).unwrap();
        let (mut p, _cs) = ring.into_single_producer(0, WaitStrategyKind::BusySpin);
        let mut r = p.lossy_reader();
        assert_eq!(r.next_seq(), 1);
        let t = thread::spawn(move || {
            for s in 1..=3u64 {
                p.push(&[s, s]);
                p.publish();
            }
        });
        match r.try_read() {
            Ok(Some((s, v))) => {
                assert_eq!(s, 1);
                assert_eq!(v, [1, 1], "torn or stale copy returned as valid");
            }
            Ok(None) => {}
            Err(l) => {
                assert_eq!(l.expected, 1);
                assert!(l.oldest_available >= 2);
                assert_eq!(r.next_seq(), l.oldest_available);
            }
        }
        t.join().unwrap();
    });
}

/// The doorbell's Dekker protocol, through a ring: the producer publishes and rings; the
/// consumer announces a park and re-checks. Either the consumer's re-check sees the record, or
/// the producer's ring finds it parked and wakes it (counted in `wakes`): never neither, which
/// would be a lost wake-up (a sleeper with work waiting). Checked by mutation: without the
/// SeqCst fence in `prepare_park`, or in `ring_all`, the model fails.
#[test]
fn doorbell_ring_is_never_lost() {
    model(|| {
        let ring = RingBuffer::<u64>::heap(2).unwrap();
        let (mut p, mut cs) = ring.into_single_producer(1, WaitStrategyKind::backoff());
        let mut c = cs.pop().unwrap();
        let bell = c.doorbell();
        let t = thread::spawn(move || {
            p.push(&7);
            p.publish();
        });
        bell.prepare_park();
        let saw = c.has_available();
        t.join().unwrap();
        assert!(saw || bell.wakes() == 1, "the record was missed and the sleeper not woken");
    });
}
