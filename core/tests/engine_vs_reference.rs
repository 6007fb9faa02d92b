//! Property test: random command streams through the fast `Engine` and the reference model must
//! give byte-identical events after every command, the same books (both sides of every
//! instrument), the same depth and the same `state_hash()`.
//!
//! `PROPTEST_CASES=N cargo test -p tickwire-core --test engine_vs_reference` runs more cases.

mod common;

use common::{fmt_events, Matcher, Reference};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use std::collections::BTreeMap;
use std::sync::Mutex;
use tickwire_core::{
    CancelReason, Command, CommandKind, Engine, EngineConfig, Event, EventKind, InstrumentConfig, InstrumentId, OrderType,
    Price, RejectReason, Side, StpMode,
};

/// What the generated streams exercised: event kinds, reject and cancel reasons (by name).
static COVERAGE: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

fn tally(evs: &[Event]) {
    let mut cov = COVERAGE.lock().unwrap_or_else(|e| e.into_inner());
    for e in evs {
        let Some(kind) = EventKind::from_u8(e.kind) else { continue };
        *cov.entry(format!("event {}", kind.name())).or_default() += 1;
        match kind {
            EventKind::Rejected => {
                if let Some(r) = RejectReason::from_u8(e.reason) {
                    *cov.entry(format!("reject {}", r.name())).or_default() += 1;
                }
            }
            EventKind::Cancelled | EventKind::MassCancelled => {
                if let Some(r) = CancelReason::from_u8(e.reason) {
                    *cov.entry(format!("cancel {}", r.name())).or_default() += 1;
                }
            }
            _ => {}
        }
    }
}

/// Fails if the generator stopped reaching some rule (a silently weak property test).
fn assert_coverage() {
    let cov = COVERAGE.lock().unwrap_or_else(|e| e.into_inner());
    let mut missing = Vec::new();
    for k in EventKind::ALL {
        if !cov.contains_key(&format!("event {}", k.name())) {
            missing.push(format!("event {}", k.name()));
        }
    }
    for r in RejectReason::ALL {
        // Reasons the core never produces (gateway only).
        if matches!(r, RejectReason::NotOwner | RejectReason::Throttled | RejectReason::NotAuthorised) {
            continue;
        }
        if !cov.contains_key(&format!("reject {}", r.name())) {
            missing.push(format!("reject {}", r.name()));
        }
    }
    for r in CancelReason::ALL {
        if !cov.contains_key(&format!("cancel {}", r.name())) {
            missing.push(format!("cancel {}", r.name()));
        }
    }
    if std::env::var_os("TICKWIRE_COVERAGE").is_some() {
        eprintln!("coverage: {cov:#?}");
    }
    assert!(missing.is_empty(), "generated streams never produced: {missing:?}");
}

/// Cases per property when PROPTEST_CASES is not set.
const DEFAULT_CASES: u32 = 256;
/// Longest generated command stream.
const MAX_COMMANDS: usize = 160;

/// Instruments of every case: 1 plain (tick 1, lot 1); 2 with tick 5, lot 10, qty 10..=200, a
/// 5 % band around reference 1000; 3 with tick 1 and a 3 % band but no reference price.
const INSTRUMENTS: [InstrumentId; 3] = [1, 2, 3];

fn base_price(instrument: InstrumentId) -> Price {
    if instrument == 2 {
        1000
    } else {
        100
    }
}

fn tick(instrument: InstrumentId) -> Price {
    if instrument == 2 {
        5
    } else {
        1
    }
}

fn lot(instrument: InstrumentId) -> u64 {
    if instrument == 2 {
        10
    } else {
        1
    }
}

fn stp_modes() -> impl Strategy<Value = StpMode> {
    prop::sample::select(StpMode::ALL.to_vec())
}

fn config() -> impl Strategy<Value = EngineConfig> {
    let capacities = prop_oneof![
        3 => Just((1000u32, 100u32, 100u32)),
        1 => (1u32..=8, 1u32..=4, 3u32..=5),
    ];
    (capacities, stp_modes(), stp_modes(), stp_modes()).prop_map(|((orders_max, levels_max, accounts_max), d, a1, a2)| {
        let mut i2 = InstrumentConfig::simple(2, "TICK5");
        i2.tick_size = 5;
        i2.lot_size = 10;
        i2.min_qty = 10;
        i2.max_qty = 200;
        i2.price_band_bps = Some(500);
        i2.reference_price = Some(1000);
        let mut i3 = InstrumentConfig::simple(3, "BANDNOREF");
        i3.price_band_bps = Some(300);
        EngineConfig {
            instruments: vec![InstrumentConfig::simple(1, "PLAIN"), i2, i3],
            orders_max,
            levels_max,
            accounts_max,
            default_stp: d,
            // Accounts 1..=3 have defaults (account 3 always cancel_taker); 4 and 5 do not.
            account_stp: vec![(1, a1), (2, a2), (3, StpMode::CancelTaker)],
        }
    })
}

/// Mostly a known instrument, rarely 0 or an unknown one.
fn instrument() -> impl Strategy<Value = InstrumentId> {
    prop_oneof![30 => 1u32..=3, 1 => Just(0u32), 1 => Just(9u32)]
}

/// The instrument an order id usually lives on, so that cancels and replaces (which derive their
/// instrument the same way) mostly name live orders.
fn home_instrument(id: u64) -> InstrumentId {
    match id % 4 {
        0 | 1 => 1,
        2 => 2,
        _ => 3,
    }
}

/// (instrument, account, order id): small spaces so ids collide, accounts self-match, and
/// cancels / replaces hit live orders.
fn order_key() -> impl Strategy<Value = (InstrumentId, u32, u64)> {
    (1u32..=4, 1u64..=6).prop_flat_map(|(acct, id)| {
        let inst = prop_oneof![9 => Just(home_instrument(id)), 1 => instrument()];
        (inst, Just(acct), Just(id))
    })
}

/// A price as (present, value) for an instrument: mostly a tick multiple near the base price,
/// sometimes absent, rarely invalid (0, negative, off tick, huge).
fn price_for(instrument: InstrumentId) -> impl Strategy<Value = Option<Price>> {
    let t = tick(instrument);
    let b = base_price(instrument);
    prop_oneof![
        40 => (-5i64..=5).prop_map(move |k| Some(b + k * t)),
        4 => (-12i64..=12).prop_map(move |k| Some(b + k * t)),
        6 => Just(None),
        1 => prop_oneof![
            Just(Some(0)),
            Just(Some(-t)),
            Just(Some(b + 1)),
            Just(Some(i64::MAX)),
            Just(Some(i64::MAX - i64::MAX % 5)),
            Just(Some(i64::MIN)),
        ],
    ]
}

/// A quantity for an instrument: mostly 1..=20 lots, rarely 0, off-lot or huge.
fn qty_for(instrument: InstrumentId) -> impl Strategy<Value = u64> {
    let l = lot(instrument);
    prop_oneof![
        40 => (1u64..=20).prop_map(move |n| n * l),
        1 => prop_oneof![Just(0u64), Just(l + 1), Just(u64::MAX), Just(10_000 * l)],
    ]
}

fn new_order() -> impl Strategy<Value = Command> {
    order_key()
        .prop_flat_map(|(inst, acct, id)| {
            let side = prop_oneof![30 => 1u8..=2, 1 => prop_oneof![Just(0u8), Just(3u8), Just(255u8)]];
            let ot = prop_oneof![
                12 => Just(OrderType::LimitGtc as u8),
                6 => Just(OrderType::PostOnly as u8),
                5 => Just(OrderType::LimitIoc as u8),
                3 => Just(OrderType::LimitFok as u8),
                4 => Just(OrderType::Market as u8),
                1 => prop_oneof![Just(0u8), Just(6u8), Just(200u8)],
            ];
            let stp = prop_oneof![20 => Just(0u8), 10 => 1u8..=5, 1 => prop_oneof![Just(6u8), Just(255u8)]];
            (Just(inst), Just(acct), Just(id), side, ot, stp, price_for(inst), qty_for(inst))
        })
        .prop_map(|(instrument, account, order_id, side, order_type, stp, price, qty)| Command {
            kind: CommandKind::New as u8,
            side,
            order_type,
            stp,
            instrument,
            account,
            flags: price.is_some() as u16,
            order_id,
            price: price.unwrap_or(0),
            qty,
            ..Command::default()
        })
}

fn cancel() -> impl Strategy<Value = Command> {
    order_key().prop_map(|(i, a, id)| Command::cancel(a, i, id))
}

fn replace() -> impl Strategy<Value = Command> {
    order_key()
        .prop_flat_map(|(inst, acct, id)| {
            let price = prop_oneof![2 => Just(None), 3 => price_for(inst)];
            (Just(inst), Just(acct), Just(id), price, qty_for(inst))
        })
        .prop_map(|(i, a, id, p, q)| Command::replace(a, i, id, p, q))
}

fn mass_cancel() -> impl Strategy<Value = Command> {
    let reason = prop_oneof![20 => 0u8..=6, 1 => prop_oneof![Just(7u8), Just(255u8)]];
    (prop_oneof![Just(0u32), instrument()], 1u32..=5, reason).prop_map(|(i, a, r)| {
        let mut c = Command::mass_cancel(a, Some(i), tickwire_core::CancelReason::MassCancel);
        c.reason = r;
        c
    })
}

fn halt_resume() -> impl Strategy<Value = Command> {
    // Halts are rarer than resumes so instruments spend most of the time open. `reason` is unused
    // by halt/resume and must be ignored, so it is sometimes set to anything.
    (instrument(), prop::bool::weighted(0.3), prop_oneof![3 => Just(0u8), 1 => any::<u8>()]).prop_map(|(i, h, r)| {
        let mut c = Command::set_halted(i, h);
        c.reason = r;
        c
    })
}

fn garbage() -> impl Strategy<Value = Command> {
    prop_oneof![
        // Arbitrary bytes.
        prop::array::uniform32(any::<u8>()).prop_flat_map(|a| {
            prop::array::uniform32(any::<u8>()).prop_map(move |b| {
                let mut bytes = [0u8; 64];
                bytes[..32].copy_from_slice(&a);
                bytes[32..].copy_from_slice(&b);
                Command::from_bytes(&bytes)
            })
        }),
        // A plausible command with an unknown kind.
        (prop_oneof![Just(0u8), 7u8..=255], new_order()).prop_map(|(k, mut c)| {
            c.kind = k;
            c
        }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        50 => new_order(),
        12 => cancel(),
        16 => replace(),
        2 => mass_cancel(),
        2 => halt_resume(),
        1 => garbage(),
    ]
}

fn scenario() -> impl Strategy<Value = (EngineConfig, Vec<Command>)> {
    (config(), prop::collection::vec(command(), 1..=MAX_COMMANDS))
}

/// Runs one stream through both, comparing after every command.
fn check(cfg: &EngineConfig, cmds: &[Command]) -> Result<(), TestCaseError> {
    let mut eng = <Engine as Matcher>::build(cfg);
    let mut refm = <Reference as Matcher>::build(cfg);
    let mut ev_e: Vec<Event> = Vec::new();
    let mut ev_r: Vec<Event> = Vec::new();
    for (i, c) in cmds.iter().enumerate() {
        let seq = i as u64 + 1;
        let c = c.with_seq(seq, seq * 1000 + 3);
        ev_e.clear();
        ev_r.clear();
        Matcher::handle(&mut eng, &c, &mut ev_e);
        Matcher::handle(&mut refm, &c, &mut ev_r);
        tally(&ev_r);
        prop_assert!(
            ev_e == ev_r,
            "events differ at command #{seq} {c:?}\n engine:\n{}reference:\n{}",
            fmt_events(&ev_e),
            fmt_events(&ev_r)
        );
        for inst in INSTRUMENTS {
            for side in [Side::Buy, Side::Sell] {
                let (a, b) = (Matcher::book_orders(&eng, inst, side), Matcher::book_orders(&refm, inst, side));
                prop_assert!(a == b, "book {inst} {side:?} differs after #{seq} {c:?}\n engine: {a:?}\n reference: {b:?}");
                let (a, b) = (Matcher::depth(&eng, inst, side), Matcher::depth(&refm, inst, side));
                prop_assert!(a == b, "depth {inst} {side:?} differs after #{seq} {c:?}\n engine: {a:?}\n reference: {b:?}");
            }
        }
        prop_assert_eq!(eng.resting_orders(), refm.resting_orders(), "resting orders after #{}", seq);
        prop_assert_eq!(eng.next_event_seq(), refm.next_event_seq(), "next event seq after #{}", seq);
        prop_assert_eq!(eng.last_cmd_seq(), refm.last_cmd_seq(), "last cmd seq after #{}", seq);
        prop_assert_eq!(
            eng.order(c.account, c.order_id),
            refm.order(c.account, c.order_id),
            "order ({}, {}) after #{}",
            c.account,
            c.order_id,
            seq
        );
        prop_assert_eq!(Matcher::state_hash(&eng), Matcher::state_hash(&refm), "state hash after #{} {:?}", seq, c);
    }
    Ok(())
}

/// Runs `f` on a thread with a large stack: proptest's nested strategies need more than the
/// default 2 MiB test-thread stack in a debug build.
fn on_big_stack(f: impl FnOnce() + Send + 'static) {
    let t = std::thread::Builder::new().stack_size(256 << 20).spawn(f).expect("spawn test thread");
    if let Err(e) = t.join() {
        std::panic::resume_unwind(e);
    }
}

fn runner() -> TestRunner {
    let mut cfg = ProptestConfig { failure_persistence: None, ..ProptestConfig::default() };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        cfg.cases = DEFAULT_CASES;
    }
    TestRunner::new(cfg)
}

#[test]
fn engine_matches_reference_on_random_streams() {
    on_big_stack(random_streams);
}

fn random_streams() {
    let mut r = runner();
    let result = r.run(&scenario(), |(cfg, cmds)| check(&cfg, &cmds));
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_coverage();
}

/// Streams of only valid, crossing-heavy orders on the plain instrument: deep sweeps and STP.
#[test]
fn engine_matches_reference_on_dense_books() {
    on_big_stack(dense_books);
}

fn dense_books() {
    let dense_cmd = prop_oneof![
        6 => (1u32..=3, 1u64..=6, 1u8..=2, 1u8..=5, 0u8..=5, 97i64..=103, 1u64..=9).prop_map(
            |(a, id, s, ot, stp, p, q)| Command {
                kind: CommandKind::New as u8,
                side: s,
                order_type: ot,
                stp,
                instrument: 1,
                account: a,
                flags: (ot != 5 || p % 2 == 0) as u16,
                order_id: id,
                price: p,
                qty: q,
                ..Command::default()
            }
        ),
        2 => (1u32..=3, 1u64..=6, prop::option::of(97i64..=103), 1u64..=9)
            .prop_map(|(a, id, p, q)| Command::replace(a, 1, id, p, q)),
        1 => (1u32..=3, 1u64..=6).prop_map(|(a, id)| Command::cancel(a, 1, id)),
    ];
    let strat = (config(), prop::collection::vec(dense_cmd, 1..=MAX_COMMANDS));
    let mut r = runner();
    let result = r.run(&strat, |(cfg, cmds)| check(&cfg, &cmds));
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Many distinct accounts and ids (the id index and account table see collisions, deletions and
/// reuse), with cancels and replaces aimed at ids entered earlier in the same stream.
#[test]
fn engine_matches_reference_with_wide_ids() {
    on_big_stack(wide_ids);
}

#[derive(Clone, Debug)]
enum WideOp {
    New { account: u32, id: u64, side: Side, ot: u8, price: i64, qty: u64 },
    Cancel(prop::sample::Index),
    Replace(prop::sample::Index, Option<i64>, u64),
    MassCancel(prop::sample::Index),
}

fn wide_ids() {
    let op = prop_oneof![
        6 => (1u32..=300, 1u64..=1_000_000, prop::bool::ANY, prop_oneof![4 => Just(1u8), 1 => 2u8..=5], 90i64..=110, 1u64..=30)
            .prop_map(|(account, id, buy, ot, price, qty)| WideOp::New {
                account,
                id,
                side: if buy { Side::Buy } else { Side::Sell },
                ot,
                price,
                qty,
            }),
        3 => any::<prop::sample::Index>().prop_map(WideOp::Cancel),
        2 => (any::<prop::sample::Index>(), prop::option::of(90i64..=110), 1u64..=30)
            .prop_map(|(i, p, q)| WideOp::Replace(i, p, q)),
        1 => any::<prop::sample::Index>().prop_map(WideOp::MassCancel),
    ];
    let caps = prop_oneof![Just(64u32), Just(100u32), Just(128u32), Just(1000u32)];
    let strat = (caps, 1u32..=300, stp_modes(), prop::collection::vec(op, 1..=400));
    let mut r = runner();
    let result = r.run(&strat, |(orders_max, accounts_max, default_stp, ops)| {
        let cfg = EngineConfig {
            instruments: vec![InstrumentConfig::simple(1, "PLAIN")],
            orders_max,
            levels_max: 16,
            accounts_max,
            default_stp,
            account_stp: Vec::new(),
        };
        // Resolve "an id entered earlier" against the stream itself.
        let mut entered: Vec<(u32, u64)> = Vec::new();
        let mut cmds = Vec::new();
        for op in ops {
            let c = match op {
                WideOp::New { account, id, side, ot, price, qty } => {
                    entered.push((account, id));
                    Command {
                        kind: CommandKind::New as u8,
                        side: side as u8,
                        order_type: ot,
                        instrument: 1,
                        account,
                        flags: 1,
                        order_id: id,
                        price,
                        qty,
                        ..Command::default()
                    }
                }
                WideOp::Cancel(i) if !entered.is_empty() => {
                    let (a, id) = *i.get(&entered);
                    Command::cancel(a, 1, id)
                }
                WideOp::Replace(i, p, q) if !entered.is_empty() => {
                    let (a, id) = *i.get(&entered);
                    Command::replace(a, 1, id, p, q)
                }
                WideOp::MassCancel(i) if !entered.is_empty() => {
                    let (a, _) = *i.get(&entered);
                    Command::mass_cancel(a, None, CancelReason::MassCancel)
                }
                _ => continue,
            };
            cmds.push(c);
        }
        check(&cfg, &cmds)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
