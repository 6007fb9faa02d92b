//! `[feed] shm_ring`: the server writes its durable events, redacted, into a shared-memory ring
//! for external `tickwire-feed --shm` shard processes. Checked by reading the ring as such a
//! process does: gapless sequence from 1, no account or order data, and the books rebuilt from
//! its level deltas equal the engine's after a replay of the journal.

mod server_util;

use server_util::*;
use std::collections::BTreeMap;
use std::time::Duration;
use tickwire_core::ring::LossyReader;
use tickwire_core::{Event, EventKind, EventView, Side};
use tickwire_protocol::{ClientMsg, NewOrder};

#[test]
fn durable_redacted_events_reach_the_shared_memory_ring() {
    let dir = TempDir::new("md-shm");
    let ring_path = std::env::temp_dir().join(format!("tickwire-md-test-{}", std::process::id()));
    let config = format!("{}shm_ring = \"{}\"\nshm_ring_capacity = 4096\n", test_config("sync"), ring_path.display());
    let mut server = ServerProc::start(dir.path(), Some(&config));
    let mut clients: Vec<Client> = [1u64, 2].iter().map(|&k| {
        let mut c = Client::connect(server.addr).unwrap();
        c.logon(k, 0);
        c
    }).collect();
    for i in 0..40u64 {
        let k = (i % 2) as usize;
        let o = NewOrder {
            side: if k == 0 { 1 } else { 2 },
            order_type: 1,
            stp: 0,
            client_order_id: 1000 + i,
            account: k as u32 + 1,
            instrument: 1 + (i % 3 == 0) as u32,
            price: Some(100 + (i % 5) as i64 - if k == 0 { 0 } else { 2 }),
            qty: 1 + i % 4,
        };
        clients[k].send(ClientMsg::NewOrder(o)).unwrap();
        clients[k].until_report(|r| r.client_order_id == 1000 + i, Duration::from_secs(20));
    }
    drop(clients);
    server.sigterm();

    let mut reader = LossyReader::<Event>::open(&ring_path).expect("ring exists");
    let mut events = Vec::new();
    while let Ok(Some((seq, ev))) = reader.try_read() {
        assert_eq!(seq, ev.seq, "ring sequence is the event sequence");
        events.push(ev);
    }
    assert!(!events.is_empty());
    assert_eq!(events[0].seq, 1);
    assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1), "gapless");
    let mut books: BTreeMap<(u32, u8, i64), u64> = BTreeMap::new();
    for ev in &events {
        match ev.kind() {
            Some(EventKind::LevelDelta | EventKind::Trade | EventKind::InstrumentStatus) => {}
            _ => assert_eq!(
                (ev.account, ev.aux32, ev.order_id, ev.aux64, ev.price, ev.qty),
                (0, 0, 0, 0, 0, 0),
                "private fields reached the shared ring: {ev:?}"
            ),
        }
        if let EventView::LevelDelta { side, price, qty, .. } = ev.view() {
            if qty == 0 {
                books.remove(&(ev.instrument, side as u8, price));
            } else {
                books.insert((ev.instrument, side as u8, price), qty);
            }
        }
    }
    // The engine's books, from the journal.
    let rec = tickwire_journal::recover(&dir.path().join("data/journal"), Default::default()).unwrap();
    let mut e = tickwire_core::Engine::new(&engine_config()).unwrap();
    rec.replay_into(&mut e, &mut Vec::new()).unwrap();
    let mut want = BTreeMap::new();
    let mut lv = Vec::new();
    for inst in [1u32, 2] {
        for side in [Side::Buy, Side::Sell] {
            e.depth(inst, side, 10_000, &mut lv);
            for l in &lv {
                want.insert((inst, side as u8, l.price), l.qty);
            }
        }
    }
    assert_eq!(books, want);
    assert!(tickwire_feed::source::image_path_for(&ring_path).exists(), "book image beside the ring");
    let _ = std::fs::remove_file(&ring_path);
    let _ = std::fs::remove_file(tickwire_feed::source::image_path_for(&ring_path));
}
