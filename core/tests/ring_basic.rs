//! Ring behaviour in-process: ordering, no loss, gating, backpressure, batches, lossy reads.
//! Every wait is bounded by a generous hang guard; nothing asserts on timing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tickwire_core::ring::{Full, Lapped, RingBuffer, Sequence, WaitStrategyKind};
use tickwire_core::Command;

const GUARD: Duration = Duration::from_secs(120);

fn guard(start: Instant, what: &str) {
    assert!(start.elapsed() < GUARD, "hang guard: {what} did not finish");
}

#[test]
fn sp_two_gating_consumers_see_everything_in_order() {
    const N: u64 = 200_000;
    let ring = RingBuffer::<[u64; 2]>::heap(64).unwrap();
    let (mut p, consumers) = ring.into_single_producer(2, WaitStrategyKind::yielding());
    let readers: Vec<_> = consumers
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut expect = 1u64;
                let mut batches = 0u64;
                while expect <= N {
                    let mut last_end = true;
                    let n = c.poll(17, |v, s, end| {
                        assert!(!end || s == expect, "end_of_batch only on the last record");
                        assert_eq!(s, expect, "gapless, in order");
                        assert_eq!(*v, [s, s * 3 + 1], "record {s} intact");
                        last_end = end;
                        expect += 1;
                    });
                    if n > 0 {
                        assert!(last_end, "every batch ends with end_of_batch");
                        assert!(n <= 17);
                        batches += 1;
                    } else {
                        std::thread::yield_now();
                        guard(start, "consumer");
                    }
                }
                batches
            })
        })
        .collect();
    for s in 1..=N {
        assert_eq!(p.push(&[s, s * 3 + 1]), s);
        if s % 5 == 0 {
            p.publish();
        }
    }
    p.publish();
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}

#[test]
fn mp_two_threads_every_command_exactly_once_in_seq_order() {
    const PER: u64 = 50_000;
    let ring = RingBuffer::<Command>::heap(64).unwrap();
    let (p, mut cs) = ring.into_multi_producer(1, WaitStrategyKind::yielding());
    let mut c = cs.pop().unwrap();
    let producers: Vec<_> = (1..=2u32)
        .map(|account| {
            let mut p = p.clone();
            std::thread::spawn(move || {
                let mut seqs = Vec::with_capacity(PER as usize);
                for i in 1..=PER {
                    let cmd = Command::cancel(account, 1, i);
                    seqs.push(p.send_with(|seq| Command { seq, ts_ns: i, ..cmd }));
                }
                seqs
            })
        })
        .collect();
    drop(p);
    let start = Instant::now();
    let mut next_id = [1u64; 3];
    let mut expect = 1u64;
    let mut owner = vec![0u32; (2 * PER + 1) as usize];
    while expect <= 2 * PER {
        let n = c.poll(64, |cmd, s, _| {
            assert_eq!(s, expect, "gapless sequence order");
            assert_eq!(cmd.seq, s, "Command.seq is the ring sequence");
            let a = cmd.account as usize;
            assert_eq!(cmd.order_id, next_id[a], "each producer's commands in its own order, once");
            assert_eq!(cmd.ts_ns, cmd.order_id);
            next_id[a] += 1;
            owner[s as usize] = cmd.account;
            expect += 1;
        });
        if n == 0 {
            std::thread::yield_now();
            guard(start, "mp consumer");
        }
    }
    assert_eq!(next_id, [1, PER + 1, PER + 1]);
    for (h, account) in producers.into_iter().zip(1u32..) {
        for s in h.join().unwrap() {
            assert_eq!(owner[s as usize], account, "send returned the sequence its command got");
        }
    }
}

#[test]
fn full_ring_backpressure_waits_and_loses_nothing() {
    let ring = RingBuffer::<u64>::heap(8).unwrap();
    let (mut p, mut cs) = ring.into_single_producer(1, WaitStrategyKind::backoff());
    let mut c = cs.pop().unwrap();
    for s in 1..=8 {
        assert_eq!(p.try_push(&s), Ok(s));
    }
    assert_eq!(p.try_push(&9), Err(Full), "a full ring refuses without a free slot");
    assert_eq!(p.pending(), 8);
    // Nothing published yet: the consumer sees nothing.
    assert_eq!(c.poll(100, |_, _, _| panic!("unpublished record seen")), 0);
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let writer = std::thread::spawn(move || {
        // push() must publish the 8 pending records before waiting, or this deadlocks.
        for s in 9..=1000u64 {
            p.push(&s);
        }
        p.publish();
        d2.store(true, Ordering::Release);
        p
    });
    let start = Instant::now();
    let mut expect = 1;
    while expect <= 1000 {
        if c.poll(3, |v, s, _| {
            assert_eq!((s, *v), (expect, expect));
            expect += 1;
        }) == 0
        {
            std::thread::sleep(Duration::from_micros(50));
            guard(start, "backpressure");
        }
    }
    let p = writer.join().unwrap();
    assert!(done.load(Ordering::Acquire));
    assert_eq!(p.published_seq(), 1000);
}

#[test]
fn mp_try_send_full_then_batch() {
    let ring = RingBuffer::<u64>::heap(4).unwrap();
    let (mut p, mut cs) = ring.into_multi_producer(1, WaitStrategyKind::backoff());
    let mut c = cs.pop().unwrap();
    for s in 1..=4 {
        assert_eq!(p.try_send_with(|seq| seq * 10), Ok(s));
    }
    assert_eq!(p.try_send_with(|seq| seq), Err(Full));
    assert_eq!(p.claimed_seq(), 4, "a failed try_send claims nothing");
    let mut got = Vec::new();
    assert_eq!(c.poll(10, |v, s, end| got.push((*v, s, end))), 4);
    assert_eq!(got, vec![(10, 1, false), (20, 2, false), (30, 3, false), (40, 4, true)]);
    assert_eq!(p.send_batch_with(3, |i, seq| seq * 100 + i as u64), (5, 7));
    got.clear();
    assert_eq!(c.poll(10, |v, s, end| got.push((*v, s, end))), 3);
    assert_eq!(got, vec![(500, 5, false), (601, 6, false), (702, 7, true)]);
}

#[test]
fn dependent_consumer_stays_behind_its_dependency() {
    let ring = RingBuffer::<u64>::heap(16).unwrap();
    let (mut p, mut cs) = ring.into_single_producer(2, WaitStrategyKind::backoff());
    let mut second = cs.pop().unwrap();
    let mut first = cs.pop().unwrap();
    second.barrier_mut().add_dependency(first.sequence());
    for s in 1..=10u64 {
        p.push(&s);
    }
    p.publish();
    assert_eq!(second.poll(100, |_, _, _| {}), 0, "nothing before the first consumer moved");
    assert_eq!(first.poll(4, |_, _, _| {}), 4);
    let mut seen = Vec::new();
    assert_eq!(second.poll(100, |_, s, _| seen.push(s)), 4);
    assert_eq!(seen, vec![1, 2, 3, 4]);
    // An external "durable up to" sequence works the same way.
    let durable = Arc::new(Sequence::new(0));
    let mut third_ring = RingBuffer::<u64>::heap(4).unwrap().into_single_producer(1, WaitStrategyKind::BusySpin);
    let mut c3 = third_ring.1.pop().unwrap();
    c3.barrier_mut().add_dependency(durable.clone());
    third_ring.0.push(&1);
    third_ring.0.publish();
    assert_eq!(c3.poll(10, |_, _, _| {}), 0);
    durable.set(1);
    assert_eq!(c3.poll(10, |_, _, _| {}), 1);
}

#[test]
fn dropped_consumer_no_longer_gates() {
    let ring = RingBuffer::<u64>::heap(4).unwrap();
    let (mut p, cs) = ring.into_single_producer(1, WaitStrategyKind::BusySpin);
    for s in 1..=4 {
        p.try_push(&s).unwrap();
    }
    assert_eq!(p.try_push(&5), Err(Full));
    drop(cs);
    assert_eq!(p.try_push(&5), Ok(5));
}

#[test]
fn alerted_barrier_stops_waiting() {
    let ring = RingBuffer::<u64>::heap(4).unwrap();
    let (_p, mut cs) = ring.into_single_producer(1, WaitStrategyKind::backoff());
    let mut c = cs.pop().unwrap();
    let flag = c.barrier().alert_flag();
    let t = std::thread::spawn(move || c.poll_wait(10, |_, _, _| {}));
    flag.store(true, Ordering::Release);
    assert!(t.join().unwrap().is_err());
}

#[test]
fn lossy_reader_on_heap_reads_and_detects_lap() {
    let ring = RingBuffer::<[u64; 4]>::heap(4).unwrap();
    let (mut p, _none) = ring.into_single_producer(0, WaitStrategyKind::BusySpin);
    let mut r = p.lossy_reader();
    assert_eq!(r.try_read(), Ok(None));
    p.push(&[1; 4]);
    assert_eq!(r.try_read(), Ok(Some((1, [1; 4]))), "stamps publish even before the cursor");
    p.publish();
    for s in 2..=10u64 {
        p.push(&[s; 4]); // no gating consumer: never blocks
    }
    p.publish();
    assert_eq!(r.try_read(), Err(Lapped { expected: 2, oldest_available: 8 }));
    let mut got = Vec::new();
    assert_eq!(r.poll(10, |v, s, end| got.push((v[0], s, end))), Ok(3));
    assert_eq!(got, vec![(8, 8, false), (9, 9, false), (10, 10, true)]);
    assert_eq!(r.poll(10, |_, _, _| {}), Ok(0));
}

#[test]
fn rings_start_at_a_given_sequence() {
    let ring = RingBuffer::<u64>::heap_from(4, 1001).unwrap();
    let (mut p, mut cs) = ring.into_single_producer(1, WaitStrategyKind::BusySpin);
    let mut c = cs.pop().unwrap();
    assert_eq!(c.next_seq(), 1001);
    for i in 0..6u64 {
        // 4 fit, then the consumer must move.
        if i == 4 {
            p.publish();
            assert_eq!(c.poll(2, |_, _, _| {}), 2);
        }
        assert_eq!(p.try_push(&i), Ok(1001 + i));
    }
    assert!(RingBuffer::<u64>::heap(3).is_err(), "capacity must be a power of two");
    assert!(RingBuffer::<u64>::heap_from(4, 0).is_err(), "sequences start at 1");
}
