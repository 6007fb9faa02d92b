//! The shared-memory event ring: written through one mapping, read through a second, read-only
//! mapping of the same file (as a feed process would), with the documented header and lap
//! detection. No timing assertions; waits are bounded by a hang guard.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use tickwire_core::ring::shm::{offsets, FORMAT_VERSION, MAGIC};
use tickwire_core::ring::{LossyReader, RingBuffer, WaitStrategyKind};
use tickwire_core::Event;

fn shm_path(tag: &str) -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    dir.join(format!("tickwire-test-{tag}-{}", std::process::id()))
}

struct Remove(PathBuf);
impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn ev(seq: u64) -> Event {
    Event {
        seq,
        cmd_seq: seq / 2,
        kind: 8,
        instrument: 1,
        account: seq as u32,
        order_id: seq.wrapping_mul(31),
        aux64: !seq,
        price: -(seq as i64),
        qty: seq * 7,
        ..Event::default()
    }
}

/// Every field derives from `seq`: a torn copy (words of two records) cannot pass.
fn check(e: &Event, seq: u64) {
    assert_eq!(*e, ev(seq), "record {seq} torn or wrong");
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

#[test]
fn header_layout_is_as_documented() {
    let path = shm_path("header");
    let _rm = Remove(path.clone());
    let (mut p, _) = RingBuffer::<Event>::create_shm(&path, 8, 1).unwrap().into_single_producer(0, WaitStrategyKind::BusySpin);
    p.push(&ev(1));
    p.push(&ev(2));
    p.publish();
    let b = std::fs::read(&path).unwrap();
    assert_eq!(&b[0..8], b"TWRING01");
    assert_eq!(u64_at(&b, offsets::MAGIC), MAGIC);
    assert_eq!(u64_at(&b, offsets::VERSION), FORMAT_VERSION);
    assert_eq!(u64_at(&b, offsets::CAPACITY), 8);
    assert_eq!(u64_at(&b, offsets::SLOT_SIZE), 64);
    assert_eq!(u64_at(&b, offsets::STAMPS_OFFSET), 384);
    let slots = u64_at(&b, offsets::SLOTS_OFFSET) as usize;
    assert_eq!(slots, 512, "384 + 8*8 rounded up to 128");
    assert_eq!(u64_at(&b, offsets::TOTAL_LEN) as usize, b.len());
    assert_eq!(b.len(), 512 + 8 * 64);
    assert_eq!(u64_at(&b, offsets::FIRST_SEQ), 1);
    assert_eq!(u64_at(&b, offsets::WRITER_PID), u64::from(std::process::id()));
    assert_ne!(u64_at(&b, offsets::WRITER_EPOCH), 0);
    assert_eq!(u64_at(&b, offsets::WRITER_STATE), 1);
    assert_eq!(u64_at(&b, offsets::CURSOR), 2);
    // Stamps of slots 1 and 2 hold sequences 1 and 2; record 2 is at slot 2.
    assert_eq!(u64_at(&b, 384 + 8), 1);
    assert_eq!(u64_at(&b, 384 + 16), 2);
    assert_eq!(u64_at(&b, slots + 2 * 64), 2, "Event.seq is the first word of its slot");
    let e2 = ev(2);
    assert_eq!(u64_at(&b, slots + 2 * 64 + 56), e2.qty, "qty at offset 56 of the record");
    assert_eq!(u64_at(&b, slots + 2 * 64 + 48) as i64, e2.price);
    drop(p);
    let b = std::fs::read(&path).unwrap();
    assert_eq!(u64_at(&b, offsets::WRITER_STATE), 2, "closed on producer drop");
}

#[test]
fn second_read_only_mapping_reads_and_detects_laps() {
    let path = shm_path("lap");
    let _rm = Remove(path.clone());
    let (mut p, _) = RingBuffer::<Event>::create_shm(&path, 16, 1).unwrap().into_single_producer(0, WaitStrategyKind::BusySpin);
    let mut r = LossyReader::<Event>::open(&path).unwrap();
    assert_eq!(r.writer_pid(), u64::from(std::process::id()));
    assert!(!r.is_writer_closed());
    assert_eq!(r.next_seq(), 1);
    assert_eq!(r.try_read(), Ok(None));
    for s in 1..=5 {
        p.push(&ev(s));
    }
    p.publish();
    let mut n = 0;
    assert_eq!(r.poll(100, |e, s, _| {
        check(e, s);
        n += 1;
    }), Ok(5));
    assert_eq!(n, 5);
    for s in 6..=40 {
        p.push(&ev(s));
    }
    p.publish();
    let lap = r.try_read().unwrap_err();
    assert_eq!(lap.expected, 6);
    assert_eq!(lap.oldest_available, 40 + 2 - 16);
    let mut last = 0;
    r.poll(100, |e, s, _| {
        check(e, s);
        last = s;
    })
    .unwrap();
    assert_eq!(last, 40);
    // Wrong record size and missing files are refused.
    assert!(LossyReader::<[u64; 4]>::open(&path).is_err());
    assert!(LossyReader::<Event>::open(&shm_path("missing")).is_err());
    drop(p);
    assert!(r.is_writer_closed());
}

#[test]
fn concurrent_writer_never_yields_a_torn_record() {
    const N: u64 = 300_000;
    let path = shm_path("torn");
    let _rm = Remove(path.clone());
    let (mut p, _) = RingBuffer::<Event>::create_shm(&path, 64, 1).unwrap().into_single_producer(0, WaitStrategyKind::BusySpin);
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut r = LossyReader::<Event>::open(&path).unwrap();
                let start = Instant::now();
                let (mut read, mut laps, mut prev) = (0u64, 0u64, 0u64);
                loop {
                    match r.poll(32, |e, s, _| {
                        check(e, s);
                        assert!(s > prev, "strictly increasing");
                        prev = s;
                        read += 1;
                    }) {
                        Ok(0) => {
                            if prev >= N || r.is_writer_closed() && r.next_seq() > r.published() {
                                break;
                            }
                            std::thread::yield_now();
                        }
                        Ok(_) => {}
                        Err(l) => {
                            assert!(l.oldest_available > l.expected);
                            assert_eq!(r.next_seq(), l.oldest_available);
                            laps += 1;
                        }
                    }
                    assert!(start.elapsed() < Duration::from_secs(120), "hang guard");
                }
                (read, laps)
            })
        })
        .collect();
    for s in 1..=N {
        p.push(&ev(s));
        if s % 3 == 0 {
            p.publish();
        }
    }
    drop(p);
    for h in readers {
        let (read, _laps) = h.join().unwrap();
        assert!(read > 0);
    }
}
