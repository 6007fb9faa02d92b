//! Quick end-to-end checks of the engine's main paths (the full suite is scenarios.rs and the
//! property tests against the reference model).

use tickwire_core::engine::Level;
use tickwire_core::*;

fn run(e: &mut Engine, seq: &mut u64, c: Command) -> Vec<EventView> {
    *seq += 1;
    let mut out = Vec::new();
    e.handle(&c.with_seq(*seq, 0), &mut out);
    assert!(!out.is_empty());
    assert!(out.last().unwrap().is_last_in_command());
    assert!(out[..out.len() - 1].iter().all(|e| !e.is_last_in_command()));
    out.iter().map(|e| e.view()).collect()
}

#[test]
fn cross_partial_fill_and_rest() {
    let mut e = Engine::new(&EngineConfig::single_default()).unwrap();
    let mut s = 0;
    let gtc = |acct, id, side, p, q| Command::new_order(acct, 1, id, side, OrderType::LimitGtc, Some(p), q, None);
    run(&mut e, &mut s, gtc(1, 1, Side::Sell, 101, 5));
    run(&mut e, &mut s, gtc(1, 2, Side::Sell, 100, 5));
    let ev = run(&mut e, &mut s, gtc(2, 9, Side::Buy, 101, 12));
    // accepted, fill@100, trade, delta(100 gone), fill@101, trade, delta(101 gone), rest delta.
    assert_eq!(ev.len(), 8, "{ev:#?}");
    assert!(matches!(ev[1], EventView::Fill { price: 100, qty: 5, maker_order_id: 2, .. }));
    assert!(matches!(ev[3], EventView::LevelDelta { side: Side::Sell, price: 100, qty: 0, orders: 0, .. }));
    assert!(matches!(ev[4], EventView::Fill { price: 101, qty: 5, taker_done: false, maker_done: true, .. }));
    assert!(matches!(ev[7], EventView::LevelDelta { side: Side::Buy, price: 101, qty: 2, orders: 1, .. }));
    let mut d = Vec::new();
    e.depth(1, Side::Buy, 5, &mut d);
    assert_eq!(d, vec![Level { price: 101, qty: 2, orders: 1 }]);
    assert_eq!(e.resting_orders(), 1);
    // cancel it
    let ev = run(&mut e, &mut s, Command::cancel(2, 1, 9));
    assert!(matches!(ev[0], EventView::Cancelled { qty: 2, reason: CancelReason::UserRequested, .. }));
    assert_eq!(e.resting_orders(), 0);
    let ev = run(&mut e, &mut s, Command::cancel(2, 1, 9));
    assert!(matches!(ev[0], EventView::Rejected { reason: RejectReason::UnknownOrder, .. }));
}

#[test]
fn replace_priority_and_mass_cancel() {
    let mut e = Engine::new(&EngineConfig::single_default()).unwrap();
    let mut s = 0;
    let gtc = |acct, id, side, p, q| Command::new_order(acct, 1, id, side, OrderType::LimitGtc, Some(p), q, None);
    for id in 1..=3 {
        run(&mut e, &mut s, gtc(id as u32, id, Side::Buy, 50, 10));
    }
    // Order 1 raises qty: goes to the back.
    let ev = run(&mut e, &mut s, Command::replace(1, 1, 1, None, 20));
    assert!(matches!(ev[0], EventView::Replaced { priority_kept: false, qty: 20, .. }));
    let mut o = Vec::new();
    e.book_orders(1, Side::Buy, &mut o);
    assert_eq!(o.iter().map(|o| o.order_id).collect::<Vec<_>>(), vec![2, 3, 1]);
    // Order 2 lowers: keeps priority.
    let ev = run(&mut e, &mut s, Command::replace(2, 1, 2, None, 5));
    assert!(matches!(ev[0], EventView::Replaced { priority_kept: true, .. }));
    e.book_orders(1, Side::Buy, &mut o);
    assert_eq!(o.iter().map(|o| o.order_id).collect::<Vec<_>>(), vec![2, 3, 1]);
    // Sell crosses everything at 50.
    let ev = run(&mut e, &mut s, Command::new_order(9, 1, 1, Side::Sell, OrderType::LimitIoc, Some(40), 100, None));
    let fills: Vec<_> = ev.iter().filter(|v| matches!(v, EventView::Fill { .. })).collect();
    assert_eq!(fills.len(), 3);
    assert!(matches!(ev.last().unwrap(), EventView::Cancelled { qty: 65, reason: CancelReason::Unfilled, .. }));
    run(&mut e, &mut s, gtc(4, 1, Side::Buy, 10, 10));
    run(&mut e, &mut s, gtc(4, 2, Side::Buy, 11, 10));
    let ev = run(&mut e, &mut s, Command::mass_cancel(4, None, CancelReason::MassCancel));
    assert!(matches!(ev.last().unwrap(), EventView::MassCancelled { orders: 2, .. }));
    assert_eq!(e.resting_orders(), 0);
}

#[test]
fn garbage_never_panics() {
    let mut e = Engine::new(&EngineConfig::single_default()).unwrap();
    let mut x: u64 = 0x1234_5678_9abc_def0;
    let mut out = Vec::new();
    for i in 0..20_000u64 {
        let mut b = [0u8; 64];
        for c in b.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        // Keep some fields plausible so deep paths are reached too.
        b[16] %= 8;
        b[17] %= 3;
        if i % 2 == 0 {
            b[20..24].copy_from_slice(&1u32.to_le_bytes());
            b[48..56].copy_from_slice(&(x % 50 + 1).to_le_bytes());
            b[40..48].copy_from_slice(&((x >> 8) % 20 + 90).to_le_bytes());
        }
        let c = Command::from_bytes(&b).with_seq(i + 1, 0);
        out.clear();
        e.handle(&c, &mut out);
        assert!(!out.is_empty());
    }
}

#[test]
fn snapshot_restore_is_indistinguishable() {
    let cfg = EngineConfig::single_default();
    let mut a = Engine::new(&cfg).unwrap();
    let mut s = 0;
    let mut x: u64 = 7;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut cmds = Vec::new();
    for id in 0..3000u64 {
        let r = next();
        let acct = (r % 7) as u32 + 1;
        let side = if r & 8 == 0 { Side::Buy } else { Side::Sell };
        let price = 100 + ((r >> 8) % 11) as i64 - 5;
        let c = match (r >> 20) % 10 {
            0..=5 => Command::new_order(acct, 1, id, side, OrderType::LimitGtc, Some(price), (r >> 30) % 9 + 1, Some(StpMode::CancelMaker)),
            6 | 7 => Command::cancel(acct, 1, id.saturating_sub((r >> 40) % 50)),
            8 => Command::replace(acct, 1, id.saturating_sub((r >> 40) % 50), Some(price), (r >> 30) % 9 + 1),
            _ => Command::mass_cancel(acct, Some(1), CancelReason::MassCancel),
        };
        cmds.push(c);
    }
    let (first, second) = cmds.split_at(2000);
    for c in first {
        run(&mut a, &mut s, *c);
    }
    let snap = a.snapshot();
    let mut b = Engine::restore(&cfg, &snap).unwrap();
    assert_eq!(a.state_hash(), b.state_hash());
    let mut s2 = s;
    for c in second {
        let ea = run(&mut a, &mut s, *c);
        let eb = run(&mut b, &mut s2, *c);
        assert_eq!(ea, eb);
    }
    assert_eq!(a.state_hash(), b.state_hash());
    // A snapshot that lies about its hash is refused.
    let mut bad = snap.clone();
    bad.state_hash ^= 1;
    assert!(Engine::restore(&cfg, &bad).is_err());
}
