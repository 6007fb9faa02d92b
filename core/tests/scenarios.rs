//! Hand-written scenarios, one or more per rule of docs/matching.md, with hand-derived expected
//! events. Every scenario runs twice: against the fast `Engine` (`engine::*`) and against the
//! reference model (`reference::*`).

mod common;

use common::{fmt_events, Matcher};
use tickwire_core::engine::RestingOrder;
use tickwire_core::event::{EV_HALTED, EV_LAST_IN_COMMAND, EV_MAKER_DONE, EV_PRIORITY_KEPT, EV_TAKER_DONE};
use tickwire_core::{
    AccountId, CancelReason, ClientOrderId, Command, CommandKind, EngineConfig, Event, EventKind, InstrumentConfig,
    InstrumentId, OrderType, Price, Qty, RejectReason, Side, StpMode,
};

use CancelReason as CR;
use OrderType::*;
use RejectReason as RR;
use Side::*;

// ------------------------------------------------------------------------------------------------
// Configuration used by most scenarios.

/// Instrument 1: tick 1, lot 1, no band. Instrument 2: tick 5, lot 10, qty 10..=1000, band 10 %
/// around reference 1000. Instrument 3: tick 1, band 5 % but no reference price.
/// Account 7 defaults to cancel_maker, account 8 to decrement_and_cancel; engine default none.
fn cfg() -> EngineConfig {
    let mut c = EngineConfig::single_default();
    c.orders_max = 1000;
    c.levels_max = 100;
    c.accounts_max = 100;
    c.instruments.push(InstrumentConfig {
        id: 2,
        symbol: "TICK5".into(),
        tick_size: 5,
        lot_size: 10,
        min_qty: 10,
        max_qty: 1000,
        price_band_bps: Some(1000),
        reference_price: Some(1000),
    });
    let mut i3 = InstrumentConfig::simple(3, "BANDNOREF");
    i3.price_band_bps = Some(500);
    c.instruments.push(i3);
    c.account_stp = vec![(7, StpMode::CancelMaker), (8, StpMode::DecrementAndCancel)];
    c
}

fn tiny(orders_max: u32, levels_max: u32, accounts_max: u32) -> EngineConfig {
    let mut c = EngineConfig::single_default();
    c.orders_max = orders_max;
    c.levels_max = levels_max;
    c.accounts_max = accounts_max;
    c
}

// ------------------------------------------------------------------------------------------------
// Harness: assigns command sequences and timestamps, completes expected events with the fields
// the doc derives mechanically (seq, cmd_seq, ts_ns, last_in_command, reject echo fields), and
// compares byte for byte.

struct H<M: Matcher> {
    m: M,
    cmd_seq: u64,
    next_ev: u64,
}

/// An expected event; `inst` `None` = the command's instrument.
#[derive(Clone, Copy, Debug)]
struct X {
    ev: Event,
    inst: Option<InstrumentId>,
}

impl X {
    fn on(mut self, instrument: InstrumentId) -> X {
        self.inst = Some(instrument);
        self
    }
}

fn x(ev: Event) -> X {
    X { ev, inst: None }
}

fn ts_of(seq: u64) -> u64 {
    seq * 1_000 + 7
}

impl<M: Matcher> H<M> {
    fn new(cfg: &EngineConfig) -> H<M> {
        H { m: M::build(cfg), cmd_seq: 0, next_ev: 1 }
    }

    /// Runs a command (seq and ts assigned here) and returns its events.
    fn run(&mut self, cmd: Command) -> (Command, Vec<Event>) {
        self.cmd_seq += 1;
        let cmd = cmd.with_seq(self.cmd_seq, ts_of(self.cmd_seq));
        let mut out = Vec::new();
        self.m.handle(&cmd, &mut out);
        assert!(!out.is_empty(), "[{}] command {cmd:?} emitted nothing", M::NAME);
        self.next_ev += out.len() as u64;
        (cmd, out)
    }

    /// Runs a command and asserts its exact events.
    #[track_caller]
    fn expect(&mut self, cmd: Command, expected: &[X]) {
        let first = self.next_ev;
        let (cmd, got) = self.run(cmd);
        let mut want = Vec::new();
        for (i, e) in expected.iter().enumerate() {
            let mut ev = e.ev;
            ev.seq = first + i as u64;
            ev.cmd_seq = cmd.seq;
            ev.instrument = e.inst.unwrap_or(cmd.instrument);
            match EventKind::from_u8(ev.kind) {
                Some(EventKind::Rejected) => {
                    ev.side = cmd.side;
                    ev.account = cmd.account;
                    ev.aux32 = cmd.kind as u32;
                    ev.order_id = cmd.order_id;
                }
                Some(EventKind::Trade) => {
                    // A trade's id is the seq of its fill, the event just before it.
                    ev.order_id = ev.seq - 1;
                    ev.aux64 = cmd.ts_ns;
                }
                Some(EventKind::LevelDelta) => ev.aux64 = cmd.ts_ns,
                _ => {}
            }
            if i + 1 == expected.len() {
                ev.flags |= EV_LAST_IN_COMMAND;
            }
            want.push(ev);
        }
        assert!(
            got == want,
            "[{}] command {cmd:?}\n got:\n{}want:\n{}",
            M::NAME,
            fmt_events(&got),
            fmt_events(&want)
        );
    }

    /// Runs a command that must not be rejected (set-up steps); returns its events.
    #[track_caller]
    fn ok(&mut self, cmd: Command) -> Vec<Event> {
        let (cmd, evs) = self.run(cmd);
        assert!(
            evs.iter().all(|e| e.kind != EventKind::Rejected as u8),
            "[{}] set-up command {cmd:?} rejected:\n{}",
            M::NAME,
            fmt_events(&evs)
        );
        evs
    }

    /// Runs a command that must be rejected with `reason` and change nothing else.
    #[track_caller]
    fn reject(&mut self, cmd: Command, reason: RejectReason) {
        let before = self.snapshot();
        self.expect(cmd, &[rej(reason)]);
        assert_eq!(before, self.snapshot(), "[{}] rejected command changed the book", M::NAME);
    }

    fn snapshot(&self) -> Vec<Vec<RestingOrder>> {
        let mut v = Vec::new();
        for i in [1, 2, 3] {
            v.push(self.m.book_orders(i, Buy));
            v.push(self.m.book_orders(i, Sell));
        }
        v
    }

    /// `(account, order id, price, open qty)` of one side in priority order.
    fn book(&self, instrument: InstrumentId, side: Side) -> Vec<(AccountId, ClientOrderId, Price, Qty)> {
        self.m.book_orders(instrument, side).iter().map(|o| (o.account, o.order_id, o.price, o.qty)).collect()
    }

    /// `(price, total, orders)` of one side, best first.
    fn levels(&self, instrument: InstrumentId, side: Side) -> Vec<(Price, Qty, u32)> {
        self.m.depth(instrument, side).iter().map(|l| (l.price, l.qty, l.orders)).collect()
    }
}

// ------------------------------------------------------------------------------------------------
// Command and expected-event shorthands.

fn new(acct: AccountId, inst: InstrumentId, id: ClientOrderId, side: Side, ot: OrderType, price: Option<Price>, qty: Qty) -> Command {
    Command::new_order(acct, inst, id, side, ot, price, qty, None)
}
fn gtc(acct: AccountId, id: ClientOrderId, side: Side, price: Price, qty: Qty) -> Command {
    new(acct, 1, id, side, LimitGtc, Some(price), qty)
}
fn with_stp(mut c: Command, stp: StpMode) -> Command {
    c.stp = stp as u8;
    c
}

fn acc(acct: AccountId, id: ClientOrderId, side: Side, ot: OrderType, price: Price, qty: Qty) -> X {
    x(Event {
        kind: EventKind::Accepted as u8,
        side: side as u8,
        account: acct,
        aux32: ot as u32,
        order_id: id,
        price,
        qty,
        ..Event::default()
    })
}
fn rej(reason: RejectReason) -> X {
    x(Event { kind: EventKind::Rejected as u8, reason: reason as u8, ..Event::default() })
}
/// Fill: taker (account, id, aggressor side), maker (account, id), maker price, qty, flags.
#[allow(clippy::too_many_arguments)]
fn fill(
    taker: AccountId,
    tid: ClientOrderId,
    side: Side,
    maker: AccountId,
    mid: ClientOrderId,
    price: Price,
    qty: Qty,
    flags: u8,
) -> X {
    x(Event {
        kind: EventKind::Fill as u8,
        side: side as u8,
        flags,
        account: taker,
        aux32: maker,
        order_id: tid,
        aux64: mid,
        price,
        qty,
        ..Event::default()
    })
}
fn trade(side: Side, price: Price, qty: Qty) -> X {
    x(Event { kind: EventKind::Trade as u8, side: side as u8, price, qty, ..Event::default() })
}
fn cxl(acct: AccountId, id: ClientOrderId, side: Side, price: Price, qty: Qty, reason: CancelReason) -> X {
    x(Event {
        kind: EventKind::Cancelled as u8,
        side: side as u8,
        reason: reason as u8,
        account: acct,
        order_id: id,
        price,
        qty,
        ..Event::default()
    })
}
fn rpl(acct: AccountId, id: ClientOrderId, side: Side, price: Price, qty: Qty, kept: bool) -> X {
    x(Event {
        kind: EventKind::Replaced as u8,
        side: side as u8,
        flags: if kept { EV_PRIORITY_KEPT } else { 0 },
        account: acct,
        order_id: id,
        price,
        qty,
        ..Event::default()
    })
}
fn dec(acct: AccountId, id: ClientOrderId, side: Side, price: Price, qty: Qty) -> X {
    x(Event {
        kind: EventKind::Decremented as u8,
        side: side as u8,
        reason: CR::SelfTradePrevention as u8,
        account: acct,
        order_id: id,
        price,
        qty,
        ..Event::default()
    })
}
fn lvl(side: Side, price: Price, qty: Qty, orders: u32) -> X {
    x(Event { kind: EventKind::LevelDelta as u8, side: side as u8, aux32: orders, price, qty, ..Event::default() })
}
fn status(halted: bool) -> X {
    x(Event { kind: EventKind::InstrumentStatus as u8, flags: if halted { EV_HALTED } else { 0 }, ..Event::default() })
}
fn mass(acct: AccountId, reason: CancelReason, n: u64) -> X {
    x(Event { kind: EventKind::MassCancelled as u8, reason: reason as u8, account: acct, qty: n, ..Event::default() })
}

const TD: u8 = EV_TAKER_DONE;
const MD: u8 = EV_MAKER_DONE;
const STP: CancelReason = CR::SelfTradePrevention;

// ------------------------------------------------------------------------------------------------
// Order types.

fn gtc_rests_without_cross<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.expect(gtc(1, 1, Buy, 100, 10), &[acc(1, 1, Buy, LimitGtc, 100, 10), lvl(Buy, 100, 10, 1)]);
    h.expect(gtc(2, 1, Buy, 100, 5), &[acc(2, 1, Buy, LimitGtc, 100, 5), lvl(Buy, 100, 15, 2)]);
    h.expect(gtc(2, 2, Sell, 101, 7), &[acc(2, 2, Sell, LimitGtc, 101, 7), lvl(Sell, 101, 7, 1)]);
    assert_eq!(h.book(1, Buy), vec![(1, 1, 100, 10), (2, 1, 100, 5)]);
    assert_eq!(h.book(1, Sell), vec![(2, 2, 101, 7)]);
    assert_eq!(h.levels(1, Buy), vec![(100, 15, 2)]);
    let o = h.m.book_orders(1, Buy)[0];
    assert_eq!((o.instrument, o.side, o.stp, o.order_type), (1, Buy, StpMode::None, LimitGtc));
}

fn gtc_sweeps_levels_then_rests_remainder<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(2, 1, Sell, 101, 5));
    h.ok(gtc(3, 1, Sell, 102, 5));
    h.ok(gtc(3, 2, Sell, 104, 5));
    h.expect(
        gtc(1, 9, Buy, 103, 15),
        &[
            acc(1, 9, Buy, LimitGtc, 103, 15),
            fill(1, 9, Buy, 2, 1, 101, 5, MD),
            trade(Buy, 101, 5),
            lvl(Sell, 101, 0, 0),
            fill(1, 9, Buy, 3, 1, 102, 5, MD),
            trade(Buy, 102, 5),
            lvl(Sell, 102, 0, 0),
            lvl(Buy, 103, 5, 1),
        ],
    );
    assert_eq!(h.book(1, Buy), vec![(1, 9, 103, 5)]);
    assert_eq!(h.book(1, Sell), vec![(3, 2, 104, 5)]);
}

fn trade_happens_at_maker_price<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(2, 1, Buy, 100, 10));
    // A sell limit far below the bid trades at the bid's price.
    h.expect(
        gtc(1, 1, Sell, 90, 4),
        &[acc(1, 1, Sell, LimitGtc, 90, 4), fill(1, 1, Sell, 2, 1, 100, 4, TD), trade(Sell, 100, 4), lvl(Buy, 100, 6, 1)],
    );
    assert_eq!(h.book(1, Buy), vec![(2, 1, 100, 6)]);
}

fn price_time_priority<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(2, 1, Sell, 101, 5)); // worse price, earliest
    h.ok(gtc(3, 1, Sell, 100, 5)); // best price, first at its level
    h.ok(gtc(4, 1, Sell, 100, 5)); // best price, second
    h.expect(
        gtc(1, 1, Buy, 101, 12),
        &[
            acc(1, 1, Buy, LimitGtc, 101, 12),
            fill(1, 1, Buy, 3, 1, 100, 5, MD),
            trade(Buy, 100, 5),
            fill(1, 1, Buy, 4, 1, 100, 5, MD),
            trade(Buy, 100, 5),
            lvl(Sell, 100, 0, 0),
            fill(1, 1, Buy, 2, 1, 101, 2, TD),
            trade(Buy, 101, 2),
            lvl(Sell, 101, 3, 1),
        ],
    );
}

fn exact_fill_sets_both_done_flags<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(2, 1, Sell, 100, 5));
    h.ok(gtc(2, 2, Sell, 100, 5));
    h.expect(
        gtc(1, 1, Buy, 100, 5),
        &[acc(1, 1, Buy, LimitGtc, 100, 5), fill(1, 1, Buy, 2, 1, 100, 5, TD | MD), trade(Buy, 100, 5), lvl(Sell, 100, 5, 1)],
    );
}

fn ioc_fills_what_crosses_and_cancels_rest<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(2, 1, Sell, 100, 5));
    h.ok(gtc(2, 2, Sell, 102, 5));
    h.expect(
        new(1, 1, 1, Buy, LimitIoc, Some(101), 8),
        &[
            acc(1, 1, Buy, LimitIoc, 101, 8),
            fill(1, 1, Buy, 2, 1, 100, 5, MD),
            trade(Buy, 100, 5),
            lvl(Sell, 100, 0, 0),
            cxl(1, 1, Buy, 101, 3, CR::Unfilled),
        ],
    );
    // Nothing crosses: accepted then cancelled whole.
    h.expect(new(1, 1, 2, Buy, LimitIoc, Some(99), 4), &[acc(1, 2, Buy, LimitIoc, 99, 4), cxl(1, 2, Buy, 99, 4, CR::Unfilled)]);
    // IOC that fills completely emits nothing after its last fill.
    h.expect(
        new(1, 1, 3, Buy, LimitIoc, Some(102), 5),
        &[acc(1, 3, Buy, LimitIoc, 102, 5), fill(1, 3, Buy, 2, 2, 102, 5, TD | MD), trade(Buy, 102, 5), lvl(Sell, 102, 0, 0)],
    );
    assert!(h.book(1, Buy).is_empty());
}

fn fok_fillable_runs_like_ioc<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(2, 1, Sell, 100, 5));
    h.ok(gtc(3, 1, Sell, 101, 5));
    h.expect(
        new(1, 1, 1, Buy, LimitFok, Some(101), 8),
        &[
            acc(1, 1, Buy, LimitFok, 101, 8),
            fill(1, 1, Buy, 2, 1, 100, 5, MD),
            trade(Buy, 100, 5),
            lvl(Sell, 100, 0, 0),
            fill(1, 1, Buy, 3, 1, 101, 3, TD),
            trade(Buy, 101, 3),
            lvl(Sell, 101, 2, 1),
        ],
    );
}

fn fok_not_fillable_is_rejected_without_effect<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(2, 1, Sell, 100, 5));
    h.ok(gtc(3, 1, Sell, 102, 5));
    // 10 within the limit is only reachable up to 102; limit 101 sees 5.
    h.reject(new(1, 1, 1, Buy, LimitFok, Some(101), 10), RR::FokNotFillable);
    h.reject(new(1, 1, 1, Buy, LimitFok, Some(102), 11), RR::FokNotFillable);
    h.ok(new(1, 1, 1, Buy, LimitFok, Some(102), 10));
    assert!(h.book(1, Sell).is_empty());
}

fn fok_walk_with_stp<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Sell, 100, 5)); // own order first in priority
    h.ok(gtc(2, 1, Sell, 100, 5));
    // cancel_maker: the own maker adds nothing, the walk goes on: 5 reachable.
    h.reject(with_stp(new(1, 1, 9, Buy, LimitFok, Some(100), 6), StpMode::CancelMaker), RR::FokNotFillable);
    // cancel_taker: the own maker ends the walk: 0 reachable.
    h.reject(with_stp(new(1, 1, 9, Buy, LimitFok, Some(100), 5), StpMode::CancelTaker), RR::FokNotFillable);
    h.reject(with_stp(new(1, 1, 9, Buy, LimitFok, Some(100), 5), StpMode::DecrementAndCancel), RR::FokNotFillable);
    // none: every maker counts.
    h.reject(with_stp(new(1, 1, 9, Buy, LimitFok, Some(100), 11), StpMode::None), RR::FokNotFillable);
    // cancel_maker and fillable: own maker cancelled, then the fill.
    h.expect(
        with_stp(new(1, 1, 9, Buy, LimitFok, Some(100), 5), StpMode::CancelMaker),
        &[
            acc(1, 9, Buy, LimitFok, 100, 5),
            cxl(1, 1, Sell, 100, 5, STP),
            fill(1, 9, Buy, 2, 1, 100, 5, TD | MD),
            trade(Buy, 100, 5),
            lvl(Sell, 100, 0, 0),
        ],
    );
}

fn post_only_rests_or_is_rejected_when_crossing<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(2, 1, Sell, 101, 5));
    h.ok(gtc(2, 2, Buy, 99, 5));
    h.expect(new(1, 1, 1, Buy, PostOnly, Some(100), 3), &[acc(1, 1, Buy, PostOnly, 100, 3), lvl(Buy, 100, 3, 1)]);
    h.reject(new(1, 1, 2, Buy, PostOnly, Some(101), 3), RR::PostOnlyWouldCross); // equal to best ask
    h.reject(new(1, 1, 2, Sell, PostOnly, Some(100), 3), RR::PostOnlyWouldCross); // equal to best bid
    h.reject(new(1, 1, 2, Sell, PostOnly, Some(50), 3), RR::PostOnlyWouldCross);
    // Crossing even when the crossed order is the account's own.
    h.reject(new(2, 1, 3, Buy, PostOnly, Some(101), 3), RR::PostOnlyWouldCross);
    assert_eq!(h.book(1, Buy)[0].1, 1);
    assert_eq!(h.m.book_orders(1, Buy)[0].order_type, PostOnly);
}

fn market_without_protection_or_band_is_unlimited<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(2, 1, Sell, 100, 5));
    h.ok(gtc(3, 1, Sell, 1_000_000, 5));
    h.expect(
        new(1, 1, 1, Buy, Market, None, 12),
        &[
            acc(1, 1, Buy, Market, 0, 12),
            fill(1, 1, Buy, 2, 1, 100, 5, MD),
            trade(Buy, 100, 5),
            lvl(Sell, 100, 0, 0),
            fill(1, 1, Buy, 3, 1, 1_000_000, 5, MD),
            trade(Buy, 1_000_000, 5),
            lvl(Sell, 1_000_000, 0, 0),
            cxl(1, 1, Buy, 0, 2, CR::Unfilled),
        ],
    );
    // Empty book: accepted, cancelled whole.
    h.expect(new(1, 1, 2, Sell, Market, None, 3), &[acc(1, 2, Sell, Market, 0, 3), cxl(1, 2, Sell, 0, 3, CR::Unfilled)]);
}

fn market_with_protection_price<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(2, 1, Buy, 100, 5));
    h.ok(gtc(2, 2, Buy, 98, 5));
    h.expect(
        new(1, 1, 1, Sell, Market, Some(99), 8),
        &[
            acc(1, 1, Sell, Market, 99, 8),
            fill(1, 1, Sell, 2, 1, 100, 5, MD),
            trade(Sell, 100, 5),
            lvl(Buy, 100, 0, 0),
            cxl(1, 1, Sell, 99, 3, CR::Unfilled),
        ],
    );
    assert_eq!(h.book(1, Buy), vec![(2, 2, 98, 5)]);
    // A protection price is validated like a limit.
    h.reject(new(1, 1, 2, Sell, Market, Some(0), 8), RR::InvalidPrice);
}

fn market_protected_at_band_edge<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    // Instrument 2: tick 5, lot 10, band 10 % around reference 1000.
    for (id, p) in [(1, 1050), (2, 1060), (3, 1065)] {
        h.ok(new(2, 2, id, Sell, LimitGtc, Some(p), 10));
    }
    h.ok(new(3, 2, 1, Buy, LimitGtc, Some(965), 10));
    h.ok(new(4, 2, 1, Sell, LimitIoc, Some(965), 10)); // last trade 965 is now the reference
    // Buy edge: 965 + 965 * 1000 / 10000 = 1061.5, rounded toward the reference to 1060:
    // takes 1050 and 1060, leaves 1065.
    h.expect(
        new(5, 2, 1, Buy, Market, None, 40),
        &[
            acc(5, 1, Buy, Market, 0, 40),
            fill(5, 1, Buy, 2, 1, 1050, 10, MD),
            trade(Buy, 1050, 10),
            lvl(Sell, 1050, 0, 0),
            fill(5, 1, Buy, 2, 2, 1060, 10, MD),
            trade(Buy, 1060, 10),
            lvl(Sell, 1060, 0, 0),
            cxl(5, 1, Buy, 0, 20, CR::Unfilled),
        ],
    );
    assert_eq!(h.book(2, Sell), vec![(2, 3, 1065, 10)]);
    // Reference now 1060: sell edge 1060 - 106 = 954; bids at 955 and 950: only 955 is reached.
    h.ok(new(3, 2, 2, Buy, LimitGtc, Some(955), 10));
    h.ok(new(3, 2, 3, Buy, LimitGtc, Some(960), 10));
    h.ok(new(3, 2, 4, Buy, LimitGtc, Some(965), 10));
    h.ok(new(6, 2, 9, Sell, LimitIoc, Some(965), 10)); // reference back to 965: edge 868.5 → 870
    h.ok(new(3, 2, 5, Buy, LimitGtc, Some(870), 10));
    h.ok(new(3, 2, 6, Buy, LimitGtc, Some(875), 10));
    // Bids: 960, 955, 875, 870. Reference 965. A market sell of 50 reaches down to 870.
    h.expect(
        new(5, 2, 2, Sell, Market, None, 50),
        &[
            acc(5, 2, Sell, Market, 0, 50),
            fill(5, 2, Sell, 3, 3, 960, 10, MD),
            trade(Sell, 960, 10),
            lvl(Buy, 960, 0, 0),
            fill(5, 2, Sell, 3, 2, 955, 10, MD),
            trade(Sell, 955, 10),
            lvl(Buy, 955, 0, 0),
            fill(5, 2, Sell, 3, 6, 875, 10, MD),
            trade(Sell, 875, 10),
            lvl(Buy, 875, 0, 0),
            fill(5, 2, Sell, 3, 5, 870, 10, MD),
            trade(Sell, 870, 10),
            lvl(Buy, 870, 0, 0),
            cxl(5, 2, Sell, 0, 10, CR::Unfilled),
        ],
    );
}

fn market_band_edge_excludes_beyond_edge<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    // Reference 1000, band 10 %: bids at 905 and 900 are inside it.
    h.ok(new(3, 2, 1, Buy, LimitGtc, Some(1010), 10));
    h.ok(new(3, 2, 2, Buy, LimitGtc, Some(905), 10));
    h.ok(new(3, 2, 3, Buy, LimitGtc, Some(900), 10));
    h.ok(new(4, 2, 1, Sell, LimitIoc, Some(1010), 10)); // last trade 1010 is now the reference
    h.ok(new(3, 2, 4, Buy, LimitGtc, Some(910), 10));
    h.ok(new(3, 2, 5, Buy, LimitGtc, Some(1000), 10));
    // Sell edge: 1010 - 101 = 909, rounded toward the reference to 910: 905 and 900 stay.
    h.expect(
        new(5, 2, 1, Sell, Market, None, 40),
        &[
            acc(5, 1, Sell, Market, 0, 40),
            fill(5, 1, Sell, 3, 5, 1000, 10, MD),
            trade(Sell, 1000, 10),
            lvl(Buy, 1000, 0, 0),
            fill(5, 1, Sell, 3, 4, 910, 10, MD),
            trade(Sell, 910, 10),
            lvl(Buy, 910, 0, 0),
            cxl(5, 1, Sell, 0, 20, CR::Unfilled),
        ],
    );
    assert_eq!(h.book(2, Buy), vec![(3, 2, 905, 10), (3, 3, 900, 10)]);
}

fn market_band_without_reference_is_unlimited<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    // Instrument 3 has a band but no reference price: no band check before the first trade.
    h.ok(new(2, 3, 1, Sell, LimitGtc, Some(100), 5));
    h.ok(new(2, 3, 2, Sell, LimitGtc, Some(1000), 5));
    h.expect(
        new(1, 3, 1, Buy, Market, None, 10),
        &[
            acc(1, 1, Buy, Market, 0, 10),
            fill(1, 1, Buy, 2, 1, 100, 5, MD),
            trade(Buy, 100, 5),
            lvl(Sell, 100, 0, 0),
            fill(1, 1, Buy, 2, 2, 1000, 5, TD | MD),
            trade(Buy, 1000, 5),
            lvl(Sell, 1000, 0, 0),
        ],
    );
    // Last trade 1000 now anchors the 5 % band.
    h.reject(new(2, 3, 3, Sell, LimitGtc, Some(1051), 5), RR::OutsidePriceBand);
    h.reject(new(2, 3, 3, Sell, LimitGtc, Some(949), 5), RR::OutsidePriceBand);
    h.ok(new(2, 3, 3, Sell, LimitGtc, Some(1050), 5));
    h.ok(new(2, 3, 4, Sell, LimitGtc, Some(950), 5));
}

// ------------------------------------------------------------------------------------------------
// Validation.

fn validation_order_of_new_order<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(new(1, 2, 5, Buy, LimitGtc, Some(1000), 10)); // live (1, 5) on instrument 2
    // A command wrong in every field; fixing one field at a time walks the list in order.
    let mut c = Command {
        kind: CommandKind::New as u8,
        side: 9,
        order_type: 9,
        stp: 9,
        instrument: 99,
        account: 1,
        flags: 0,
        order_id: 5,
        price: 0,
        qty: 7,
        ..Command::default()
    };
    h.reject(c, RR::UnknownInstrument);
    c.instrument = 2;
    h.ok(Command::set_halted(2, true));
    h.reject(c, RR::InstrumentHalted);
    h.ok(Command::set_halted(2, false));
    h.reject(c, RR::InvalidSide);
    c.side = 0;
    h.reject(c, RR::InvalidSide);
    c.side = Buy as u8;
    h.reject(c, RR::InvalidOrderType);
    c.order_type = 0;
    h.reject(c, RR::InvalidOrderType);
    c.order_type = 6;
    h.reject(c, RR::InvalidOrderType);
    c.order_type = LimitGtc as u8;
    h.reject(c, RR::InvalidStp);
    c.stp = 6;
    h.reject(c, RR::InvalidStp);
    c.stp = 0;
    h.reject(c, RR::QuantityOffLot); // 7 not a multiple of 10
    c.qty = 0;
    h.reject(c, RR::QuantityOffLot);
    c.qty = 1010;
    h.reject(c, RR::QuantityOutOfRange); // multiple of the lot, above max 1000
    c.qty = 20;
    h.reject(c, RR::InvalidPrice); // limit type without price
    c.flags = 1;
    c.price = -5;
    h.reject(c, RR::InvalidPrice);
    c.price = 0;
    h.reject(c, RR::InvalidPrice);
    c.price = 1003;
    h.reject(c, RR::PriceOffTick);
    c.price = 1105; // |105| * 10000 > 1000 * 1000
    h.reject(c, RR::OutsidePriceBand);
    c.price = 895;
    h.reject(c, RR::OutsidePriceBand);
    c.price = 1100; // the edge itself is inside
    h.reject(c, RR::DuplicateOrderId);
    c.order_id = 6;
    h.expect(c, &[acc(1, 6, Buy, LimitGtc, 1100, 20), lvl(Buy, 1100, 20, 1)]);
}

fn quantity_range_below_min<M: Matcher>() {
    let mut c = cfg();
    c.instruments[1].min_qty = 30;
    let mut h = H::<M>::new(&c);
    h.reject(new(1, 2, 1, Buy, LimitGtc, Some(1000), 20), RR::QuantityOutOfRange);
    h.ok(new(1, 2, 1, Buy, LimitGtc, Some(1000), 30));
    h.ok(new(1, 2, 2, Buy, LimitGtc, Some(1000), 1000));
}

fn market_needs_no_price_but_limits_do<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    for ot in [LimitGtc, LimitIoc, LimitFok, PostOnly] {
        h.reject(new(1, 1, 1, Buy, ot, None, 5), RR::InvalidPrice);
    }
    h.ok(new(1, 1, 1, Buy, Market, None, 5));
    h.reject(new(1, 2, 1, Buy, Market, Some(1002), 10), RR::PriceOffTick);
    h.reject(new(1, 2, 1, Buy, Market, Some(1200), 10), RR::OutsidePriceBand);
}

fn duplicate_id_and_reuse_after_done<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Buy, 100, 5));
    h.reject(gtc(1, 1, Sell, 200, 5), RR::DuplicateOrderId);
    // Duplicate whatever the instrument (the id is per account).
    h.reject(new(1, 3, 1, Sell, LimitGtc, Some(200), 5), RR::DuplicateOrderId);
    // Same id, other account: fine.
    h.ok(gtc(2, 1, Buy, 100, 5));
    // Once filled, the id may be reused.
    h.ok(new(3, 1, 1, Sell, LimitIoc, Some(100), 10));
    h.expect(gtc(1, 1, Buy, 90, 1), &[acc(1, 1, Buy, LimitGtc, 90, 1), lvl(Buy, 90, 1, 1)]);
    // Once cancelled too.
    h.ok(Command::cancel(1, 1, 1));
    h.ok(gtc(1, 1, Buy, 90, 2));
    // An IOC id is never live after its command.
    h.ok(new(4, 1, 1, Buy, LimitIoc, Some(1), 1));
    h.ok(new(4, 1, 1, Buy, LimitIoc, Some(1), 1));
}

fn capacity_orders_max<M: Matcher>() {
    let mut h = H::<M>::new(&tiny(2, 10, 10));
    h.ok(gtc(1, 1, Buy, 100, 5));
    h.ok(gtc(2, 1, Buy, 99, 5));
    h.reject(gtc(1, 2, Buy, 100, 5), RR::CapacityExhausted);
    h.reject(new(1, 1, 2, Sell, PostOnly, Some(150), 5), RR::CapacityExhausted);
    // Even a gtc that would fill at once: the check comes before matching.
    h.reject(gtc(3, 1, Sell, 100, 5), RR::CapacityExhausted);
    // Types that cannot rest are not limited by the order store.
    h.ok(new(3, 1, 1, Sell, LimitIoc, Some(100), 5));
    h.ok(gtc(3, 2, Sell, 150, 5));
}

fn capacity_levels_max<M: Matcher>() {
    let mut h = H::<M>::new(&tiny(10, 2, 10));
    h.ok(gtc(1, 1, Buy, 100, 5));
    h.ok(gtc(1, 2, Buy, 99, 5));
    h.reject(gtc(1, 3, Buy, 98, 5), RR::CapacityExhausted);
    h.reject(gtc(1, 3, Buy, 101, 5), RR::CapacityExhausted);
    h.ok(gtc(1, 3, Buy, 99, 5)); // existing level
    // The other side has its own levels.
    h.ok(gtc(1, 4, Sell, 110, 5));
    h.ok(gtc(1, 5, Sell, 111, 5));
    h.reject(gtc(1, 6, Sell, 112, 5), RR::CapacityExhausted);
    h.ok(new(1, 1, 6, Sell, LimitIoc, Some(112), 5));
    // Replace to a new level on a full side: rejected even though (1, 1) is alone at 100 and
    // moving it would free that level (the check looks at the side before the move).
    h.reject(Command::replace(1, 1, 1, Some(97), 5), RR::CapacityExhausted);
    h.ok(Command::replace(1, 1, 1, Some(99), 5));
}

fn capacity_accounts_max<M: Matcher>() {
    let mut h = H::<M>::new(&tiny(10, 10, 2));
    h.ok(gtc(1, 1, Buy, 100, 5));
    h.ok(gtc(2, 1, Buy, 99, 5));
    h.reject(gtc(3, 1, Buy, 98, 5), RR::CapacityExhausted);
    h.reject(new(3, 1, 1, Sell, PostOnly, Some(150), 5), RR::CapacityExhausted);
    // Known accounts keep trading, also after their orders are gone.
    h.ok(Command::cancel(1, 1, 1));
    h.ok(gtc(1, 2, Buy, 98, 5));
}

/// Reading adopted for step 11 (engine and reference agree): the account table holds accounts
/// that hold (or held) resting orders, so only a type that can rest needs an entry, and an
/// account gets one when its first order rests, not when an order is accepted.
fn capacity_accounts_only_for_resting_orders<M: Matcher>() {
    let mut h = H::<M>::new(&tiny(10, 10, 2));
    h.ok(gtc(1, 1, Sell, 100, 5)); // account 1 takes an entry
    // Account 2's gtc fills completely: it never rests, so it takes no entry.
    h.expect(
        gtc(2, 1, Buy, 100, 5),
        &[acc(2, 1, Buy, LimitGtc, 100, 5), fill(2, 1, Buy, 1, 1, 100, 5, TD | MD), trade(Buy, 100, 5), lvl(Sell, 100, 0, 0)],
    );
    h.ok(gtc(3, 1, Sell, 110, 5)); // account 3 takes the last entry
    h.reject(gtc(2, 2, Sell, 120, 5), RR::CapacityExhausted);
    // Types that never rest need no entry, even with the table full.
    h.expect(
        new(4, 1, 1, Buy, LimitIoc, Some(110), 2),
        &[acc(4, 1, Buy, LimitIoc, 110, 2), fill(4, 1, Buy, 3, 1, 110, 2, TD), trade(Buy, 110, 2), lvl(Sell, 110, 3, 1)],
    );
    h.ok(new(4, 1, 2, Buy, LimitFok, Some(110), 1));
    h.ok(new(4, 1, 3, Buy, Market, None, 1));
}

fn stp_decrement_and_cancel_market_taker<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Sell, 100, 4));
    h.ok(gtc(2, 1, Sell, 100, 2));
    // The taker's decremented / cancelled events carry its order price: 0 for a market order
    // without protection.
    h.expect(
        with_stp(new(1, 1, 2, Buy, Market, None, 10), StpMode::DecrementAndCancel),
        &[
            acc(1, 2, Buy, Market, 0, 10),
            cxl(1, 1, Sell, 100, 4, STP),
            dec(1, 2, Buy, 0, 6),
            fill(1, 2, Buy, 2, 1, 100, 2, MD),
            trade(Buy, 100, 2),
            lvl(Sell, 100, 0, 0),
            cxl(1, 2, Buy, 0, 4, CR::Unfilled),
        ],
    );
}

fn capacity_precedes_post_only_and_fok_checks<M: Matcher>() {
    let mut h = H::<M>::new(&tiny(1, 10, 10));
    h.ok(gtc(2, 1, Sell, 100, 5));
    // Store full: a crossing post-only reports capacity (11) before crossing (12).
    h.reject(new(1, 1, 1, Buy, PostOnly, Some(100), 5), RR::CapacityExhausted);
    // A FOK is not limited by the store: its own failure is reported.
    h.reject(new(1, 1, 1, Buy, LimitFok, Some(100), 6), RR::FokNotFillable);
}

fn garbage_unknown_kinds_are_malformed<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    for kind in [0u8, 7, 8, 100, 255] {
        let c = Command { kind, side: 1, instrument: 1, account: 3, order_id: 77, qty: 5, ..Command::default() };
        h.reject(c, RR::MalformedCommand);
    }
}

fn garbage_random_bytes_never_panic<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Buy, 100, 5));
    h.ok(gtc(2, 1, Sell, 101, 5));
    // xorshift64*: deterministic garbage.
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for round in 0..20_000u32 {
        let mut b = [0u8; 64];
        for chunk in b.chunks_mut(8) {
            chunk.copy_from_slice(&next().to_le_bytes());
        }
        // Half the time force a valid kind and a small instrument so deeper checks are reached.
        if round % 2 == 0 {
            b[16] = (next() % 7) as u8;
            b[20..24].copy_from_slice(&((next() % 5) as u32).to_le_bytes());
        }
        let c = Command::from_bytes(&b);
        let (_, evs) = h.run(c);
        assert!(evs.last().unwrap().is_last_in_command());
        assert!(evs[..evs.len() - 1].iter().all(|e| !e.is_last_in_command()));
        if CommandKind::from_u8(c.kind).is_none() {
            assert_eq!(evs.len(), 1);
            assert_eq!(evs[0].kind, EventKind::Rejected as u8);
            assert_eq!(evs[0].reason, RR::MalformedCommand as u8);
            assert_eq!(evs[0].aux32, c.kind as u32);
        }
        for e in &evs {
            assert_ne!(e.view(), tickwire_core::EventView::Invalid, "undecodable event {e:?}");
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Cancel.

fn cancel_resting_order<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Buy, 100, 5));
    h.ok(gtc(2, 1, Buy, 100, 7));
    h.expect(Command::cancel(1, 1, 1), &[cxl(1, 1, Buy, 100, 5, CR::UserRequested), lvl(Buy, 100, 7, 1)]);
    h.expect(Command::cancel(2, 1, 1), &[cxl(2, 1, Buy, 100, 7, CR::UserRequested), lvl(Buy, 100, 0, 0)]);
    h.reject(Command::cancel(2, 1, 1), RR::UnknownOrder);
    assert!(h.book(1, Buy).is_empty());
}

fn cancel_partially_filled_reports_open_qty<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Sell, 100, 10));
    h.ok(gtc(2, 1, Buy, 100, 4));
    h.expect(Command::cancel(1, 1, 1), &[cxl(1, 1, Sell, 100, 6, CR::UserRequested), lvl(Sell, 100, 0, 0)]);
}

fn cancel_unknown_or_wrong_instrument<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Buy, 100, 5));
    h.reject(Command::cancel(1, 1, 2), RR::UnknownOrder);
    h.reject(Command::cancel(2, 1, 1), RR::UnknownOrder); // other account
    h.reject(Command::cancel(1, 3, 1), RR::UnknownOrder); // other instrument
    h.reject(Command::cancel(1, 99, 1), RR::UnknownOrder); // unknown instrument: still unknown_order
}

fn cancel_allowed_while_halted<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Buy, 100, 5));
    h.expect(Command::set_halted(1, true), &[status(true)]);
    h.expect(Command::cancel(1, 1, 1), &[cxl(1, 1, Buy, 100, 5, CR::UserRequested), lvl(Buy, 100, 0, 0)]);
}

// ------------------------------------------------------------------------------------------------
// Replace.

fn replace_qty_down_keeps_priority<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Buy, 100, 10));
    h.ok(gtc(2, 1, Buy, 100, 10));
    h.expect(Command::replace(1, 1, 1, None, 4), &[rpl(1, 1, Buy, 100, 4, true), lvl(Buy, 100, 14, 2)]);
    // Equal qty, price given but unchanged: still kept.
    h.expect(Command::replace(1, 1, 1, Some(100), 4), &[rpl(1, 1, Buy, 100, 4, true), lvl(Buy, 100, 14, 2)]);
    assert_eq!(h.book(1, Buy), vec![(1, 1, 100, 4), (2, 1, 100, 10)]);
    // Priority really kept: a seller trades with (1, 1) first.
    h.expect(
        gtc(3, 1, Sell, 100, 5),
        &[
            acc(3, 1, Sell, LimitGtc, 100, 5),
            fill(3, 1, Sell, 1, 1, 100, 4, MD),
            trade(Sell, 100, 4),
            fill(3, 1, Sell, 2, 1, 100, 1, TD),
            trade(Sell, 100, 1),
            lvl(Buy, 100, 9, 1),
        ],
    );
}

fn replace_qty_up_loses_priority<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Buy, 100, 10));
    h.ok(gtc(2, 1, Buy, 100, 10));
    h.expect(Command::replace(1, 1, 1, None, 11), &[rpl(1, 1, Buy, 100, 11, false), lvl(Buy, 100, 21, 2)]);
    assert_eq!(h.book(1, Buy), vec![(2, 1, 100, 10), (1, 1, 100, 11)]);
    // Alone at its level: still "moves" to the back, the flag says priority lost.
    h.ok(gtc(3, 1, Sell, 200, 10));
    h.expect(Command::replace(3, 1, 1, Some(200), 20), &[rpl(3, 1, Sell, 200, 20, false), lvl(Sell, 200, 20, 1)]);
}

fn replace_after_partial_fill_sets_open_qty<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Buy, 100, 10));
    h.ok(gtc(2, 1, Buy, 100, 10));
    h.ok(new(3, 1, 1, Sell, LimitIoc, Some(100), 6)); // (1, 1) open 4
    // New open qty 4 = current open: kept. 5 > 4: lost.
    h.expect(Command::replace(1, 1, 1, None, 4), &[rpl(1, 1, Buy, 100, 4, true), lvl(Buy, 100, 14, 2)]);
    h.expect(Command::replace(1, 1, 1, None, 5), &[rpl(1, 1, Buy, 100, 5, false), lvl(Buy, 100, 15, 2)]);
}

fn replace_price_move_without_cross<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Buy, 100, 10));
    h.ok(gtc(2, 1, Buy, 99, 3));
    h.ok(gtc(9, 1, Sell, 105, 3));
    h.expect(
        Command::replace(1, 1, 1, Some(99), 10),
        &[rpl(1, 1, Buy, 99, 10, false), lvl(Buy, 100, 0, 0), lvl(Buy, 99, 13, 2)],
    );
    assert_eq!(h.book(1, Buy), vec![(2, 1, 99, 3), (1, 1, 99, 10)]);
    h.expect(Command::replace(1, 1, 1, Some(104), 2), &[rpl(1, 1, Buy, 104, 2, false), lvl(Buy, 99, 3, 1), lvl(Buy, 104, 2, 1)]);
}

fn replace_crossing_trades_and_rests<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Buy, 100, 10));
    h.ok(gtc(1, 2, Buy, 100, 1));
    h.ok(gtc(2, 1, Sell, 102, 4));
    h.ok(gtc(2, 2, Sell, 103, 4));
    h.expect(
        Command::replace(1, 1, 1, Some(102), 6),
        &[
            rpl(1, 1, Buy, 102, 6, false),
            lvl(Buy, 100, 1, 1),
            fill(1, 1, Buy, 2, 1, 102, 4, MD),
            trade(Buy, 102, 4),
            lvl(Sell, 102, 0, 0),
            lvl(Buy, 102, 2, 1),
        ],
    );
    assert_eq!(h.book(1, Buy), vec![(1, 1, 102, 2), (1, 2, 100, 1)]);
    // Crossing replace that fills completely: the order is gone, its id free.
    h.expect(
        Command::replace(1, 1, 1, Some(103), 4),
        &[
            rpl(1, 1, Buy, 103, 4, false),
            lvl(Buy, 102, 0, 0),
            fill(1, 1, Buy, 2, 2, 103, 4, TD | MD),
            trade(Buy, 103, 4),
            lvl(Sell, 103, 0, 0),
        ],
    );
    h.reject(Command::cancel(1, 1, 1), RR::UnknownOrder);
    h.ok(gtc(1, 1, Buy, 50, 1));
}

fn replace_crossing_keeps_mass_cancel_place<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Buy, 100, 10));
    h.ok(gtc(1, 2, Buy, 98, 1));
    h.ok(gtc(2, 1, Sell, 101, 4));
    h.ok(Command::replace(1, 1, 1, Some(101), 10)); // trades 4, rests 6 at 101
    h.ok(Command::replace(1, 1, 2, Some(97), 1));
    h.expect(
        Command::mass_cancel(1, None, CR::MassCancel),
        &[
            cxl(1, 1, Buy, 101, 6, CR::MassCancel).on(1),
            lvl(Buy, 101, 0, 0).on(1),
            cxl(1, 2, Buy, 97, 1, CR::MassCancel).on(1),
            lvl(Buy, 97, 0, 0).on(1),
            mass(1, CR::MassCancel, 2),
        ],
    );
}

fn replace_crossing_uses_own_stp<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(with_stp(gtc(1, 1, Buy, 100, 10), StpMode::CancelTaker));
    h.ok(gtc(1, 2, Sell, 102, 4));
    h.expect(
        Command::replace(1, 1, 1, Some(102), 10),
        &[rpl(1, 1, Buy, 102, 10, false), lvl(Buy, 100, 0, 0), cxl(1, 1, Buy, 102, 10, STP)],
    );
    assert!(h.book(1, Buy).is_empty());
    assert_eq!(h.book(1, Sell), vec![(1, 2, 102, 4)]);
    h.ok(gtc(1, 1, Buy, 90, 1)); // id free again
}

fn replace_validation<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(new(1, 2, 1, Buy, LimitGtc, Some(1000), 20));
    h.ok(new(1, 2, 2, Sell, PostOnly, Some(1010), 20));
    h.ok(new(1, 1, 3, Buy, LimitGtc, Some(100), 5)); // instrument 1
    h.reject(Command::replace(1, 2, 9, None, 20), RR::UnknownOrder);
    h.reject(Command::replace(2, 2, 1, None, 20), RR::UnknownOrder);
    h.reject(Command::replace(1, 1, 1, None, 20), RR::UnknownOrder); // wrong instrument
    h.reject(Command::replace(1, 99, 1, None, 20), RR::UnknownOrder);
    h.ok(Command::set_halted(2, true));
    h.reject(Command::replace(1, 2, 1, Some(3), 0), RR::InstrumentHalted);
    h.ok(Command::set_halted(2, false));
    h.reject(Command::replace(1, 2, 1, Some(3), 0), RR::QuantityOffLot);
    h.reject(Command::replace(1, 2, 1, Some(3), 25), RR::QuantityOffLot);
    h.reject(Command::replace(1, 2, 1, Some(3), 2000), RR::QuantityOutOfRange);
    h.reject(Command::replace(1, 2, 1, Some(-5), 20), RR::InvalidPrice);
    h.reject(Command::replace(1, 2, 1, Some(0), 20), RR::InvalidPrice);
    h.reject(Command::replace(1, 2, 1, Some(3), 20), RR::PriceOffTick);
    h.reject(Command::replace(1, 2, 1, Some(1105), 20), RR::OutsidePriceBand);
    // Post-only replace that would cross.
    h.reject(Command::replace(1, 2, 2, Some(1000), 20), RR::PostOnlyWouldCross);
    h.reject(Command::replace(1, 2, 2, Some(995), 20), RR::PostOnlyWouldCross);
    h.expect(
        Command::replace(1, 2, 2, Some(1005), 20),
        &[rpl(1, 2, Sell, 1005, 20, false), lvl(Sell, 1010, 0, 0), lvl(Sell, 1005, 20, 1)],
    );
}

// ------------------------------------------------------------------------------------------------
// Mass cancel.

fn mass_cancel_per_instrument_and_all<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Buy, 100, 5));
    h.ok(new(1, 3, 2, Sell, LimitGtc, Some(200), 6));
    h.ok(gtc(2, 1, Buy, 100, 7));
    h.ok(gtc(1, 3, Sell, 110, 8));
    h.ok(new(1, 2, 4, Buy, LimitGtc, Some(1000), 10));
    h.expect(
        Command::mass_cancel(1, Some(1), CR::MassCancel),
        &[
            cxl(1, 1, Buy, 100, 5, CR::MassCancel),
            lvl(Buy, 100, 7, 1),
            cxl(1, 3, Sell, 110, 8, CR::MassCancel),
            lvl(Sell, 110, 0, 0),
            mass(1, CR::MassCancel, 2),
        ],
    );
    h.expect(
        Command::mass_cancel(1, None, CR::CancelOnDisconnect),
        &[
            cxl(1, 2, Sell, 200, 6, CR::CancelOnDisconnect).on(3),
            lvl(Sell, 200, 0, 0).on(3),
            cxl(1, 4, Buy, 1000, 10, CR::CancelOnDisconnect).on(2),
            lvl(Buy, 1000, 0, 0).on(2),
            mass(1, CR::CancelOnDisconnect, 2).on(0),
        ],
    );
    assert_eq!(h.book(1, Buy), vec![(2, 1, 100, 7)]);
}

fn mass_cancel_reasons_and_empty<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    // Nothing to cancel (unknown account too): mass_cancelled with 0.
    h.expect(Command::mass_cancel(5, None, CR::MassCancel), &[mass(5, CR::MassCancel, 0).on(0)]);
    h.expect(Command::mass_cancel(5, Some(2), CR::Admin), &[mass(5, CR::Admin, 0)]);
    // Reason 0 means mass_cancel.
    h.ok(gtc(5, 1, Buy, 100, 5));
    let mut c = Command::mass_cancel(5, Some(1), CR::MassCancel);
    c.reason = 0;
    h.expect(c, &[cxl(5, 1, Buy, 100, 5, CR::MassCancel), lvl(Buy, 100, 0, 0), mass(5, CR::MassCancel, 1)]);
    // Every cancel reason is accepted as a mass-cancel reason.
    for r in CancelReason::ALL {
        h.expect(Command::mass_cancel(5, Some(1), *r), &[mass(5, *r, 0)]);
    }
    let mut bad = Command::mass_cancel(5, Some(1), CR::MassCancel);
    bad.reason = 7;
    h.reject(bad, RR::MalformedCommand);
    h.reject(Command::mass_cancel(5, Some(99), CR::MassCancel), RR::UnknownInstrument);
    // Unknown instrument is checked before the reason.
    bad.instrument = 99;
    h.reject(bad, RR::UnknownInstrument);
}

fn mass_cancel_while_halted<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(5, 1, Buy, 100, 5));
    h.ok(Command::set_halted(1, true));
    h.expect(
        Command::mass_cancel(5, Some(1), CR::Admin),
        &[cxl(5, 1, Buy, 100, 5, CR::Admin), lvl(Buy, 100, 0, 0), mass(5, CR::Admin, 1)],
    );
}

// ------------------------------------------------------------------------------------------------
// Self-trade prevention.

fn stp_none_allows_self_trade<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Sell, 100, 5));
    h.expect(
        gtc(1, 2, Buy, 100, 5),
        &[acc(1, 2, Buy, LimitGtc, 100, 5), fill(1, 2, Buy, 1, 1, 100, 5, TD | MD), trade(Buy, 100, 5), lvl(Sell, 100, 0, 0)],
    );
}

fn stp_cancel_taker<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(2, 1, Sell, 100, 3));
    h.ok(gtc(1, 1, Sell, 100, 5));
    h.ok(gtc(2, 2, Sell, 100, 5));
    h.expect(
        with_stp(gtc(1, 2, Buy, 101, 10), StpMode::CancelTaker),
        &[
            acc(1, 2, Buy, LimitGtc, 101, 10),
            fill(1, 2, Buy, 2, 1, 100, 3, MD),
            trade(Buy, 100, 3),
            lvl(Sell, 100, 10, 2),
            cxl(1, 2, Buy, 101, 7, STP),
        ],
    );
    // The own maker first in line: no level changed, so no level delta.
    h.expect(
        with_stp(new(1, 1, 3, Buy, LimitIoc, Some(100), 4), StpMode::CancelTaker),
        &[acc(1, 3, Buy, LimitIoc, 100, 4), cxl(1, 3, Buy, 100, 4, STP)],
    );
    assert_eq!(h.book(1, Sell), vec![(1, 1, 100, 5), (2, 2, 100, 5)]);
    assert!(h.book(1, Buy).is_empty());
}

fn stp_cancel_maker<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Sell, 100, 5));
    h.ok(gtc(2, 1, Sell, 100, 5));
    h.ok(gtc(1, 2, Sell, 101, 5));
    h.expect(
        with_stp(gtc(1, 3, Buy, 101, 7), StpMode::CancelMaker),
        &[
            acc(1, 3, Buy, LimitGtc, 101, 7),
            cxl(1, 1, Sell, 100, 5, STP),
            fill(1, 3, Buy, 2, 1, 100, 5, MD),
            trade(Buy, 100, 5),
            lvl(Sell, 100, 0, 0),
            cxl(1, 2, Sell, 101, 5, STP),
            lvl(Sell, 101, 0, 0),
            lvl(Buy, 101, 2, 1),
        ],
    );
}

fn stp_cancel_both<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(2, 1, Buy, 100, 2));
    h.ok(gtc(1, 1, Buy, 100, 5));
    h.ok(gtc(2, 2, Buy, 100, 5));
    h.expect(
        with_stp(new(1, 1, 2, Sell, Market, None, 10), StpMode::CancelBoth),
        &[
            acc(1, 2, Sell, Market, 0, 10),
            fill(1, 2, Sell, 2, 1, 100, 2, MD),
            trade(Sell, 100, 2),
            cxl(1, 1, Buy, 100, 5, STP),
            lvl(Buy, 100, 5, 1),
            cxl(1, 2, Sell, 0, 8, STP),
        ],
    );
}

fn stp_decrement_and_cancel_maker_larger<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Sell, 100, 10));
    h.expect(
        with_stp(gtc(1, 2, Buy, 100, 4), StpMode::DecrementAndCancel),
        &[acc(1, 2, Buy, LimitGtc, 100, 4), dec(1, 1, Sell, 100, 6), lvl(Sell, 100, 6, 1), cxl(1, 2, Buy, 100, 4, STP)],
    );
    assert_eq!(h.book(1, Sell), vec![(1, 1, 100, 6)]);
    assert!(h.book(1, Buy).is_empty());
}

fn stp_decrement_and_cancel_taker_larger<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Sell, 100, 4));
    h.ok(gtc(2, 1, Sell, 101, 3));
    h.expect(
        with_stp(gtc(1, 2, Buy, 101, 10), StpMode::DecrementAndCancel),
        &[
            acc(1, 2, Buy, LimitGtc, 101, 10),
            cxl(1, 1, Sell, 100, 4, STP),
            dec(1, 2, Buy, 101, 6),
            lvl(Sell, 100, 0, 0),
            fill(1, 2, Buy, 2, 1, 101, 3, MD),
            trade(Buy, 101, 3),
            lvl(Sell, 101, 0, 0),
            lvl(Buy, 101, 3, 1),
        ],
    );
    assert_eq!(h.book(1, Buy), vec![(1, 2, 101, 3)]);
}

fn stp_decrement_and_cancel_equal<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Sell, 100, 5));
    h.ok(gtc(2, 1, Sell, 100, 5));
    h.expect(
        with_stp(new(1, 1, 2, Buy, LimitIoc, Some(100), 5), StpMode::DecrementAndCancel),
        &[acc(1, 2, Buy, LimitIoc, 100, 5), cxl(1, 1, Sell, 100, 5, STP), lvl(Sell, 100, 5, 1), cxl(1, 2, Buy, 100, 5, STP)],
    );
}

fn stp_account_default_and_override<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    // Account 7 defaults to cancel_maker.
    h.ok(gtc(7, 1, Sell, 100, 5));
    h.expect(
        gtc(7, 2, Buy, 100, 3),
        &[acc(7, 2, Buy, LimitGtc, 100, 3), cxl(7, 1, Sell, 100, 5, STP), lvl(Sell, 100, 0, 0), lvl(Buy, 100, 3, 1)],
    );
    // The resting order carries its effective mode.
    assert_eq!(h.m.book_orders(1, Buy)[0].stp, StpMode::CancelMaker);
    // A per-order mode overrides the account default.
    h.expect(
        with_stp(gtc(7, 3, Sell, 100, 2), StpMode::None),
        &[acc(7, 3, Sell, LimitGtc, 100, 2), fill(7, 3, Sell, 7, 2, 100, 2, TD), trade(Sell, 100, 2), lvl(Buy, 100, 1, 1)],
    );
    // Account 8 defaults to decrement_and_cancel.
    h.ok(gtc(8, 1, Sell, 200, 5));
    h.expect(
        gtc(8, 2, Buy, 200, 5),
        &[acc(8, 2, Buy, LimitGtc, 200, 5), cxl(8, 1, Sell, 200, 5, STP), lvl(Sell, 200, 0, 0), cxl(8, 2, Buy, 200, 5, STP)],
    );
    // Account 9 has no default: the engine default (none) applies.
    h.ok(gtc(9, 1, Sell, 300, 5));
    assert_eq!(h.m.book_orders(1, Sell)[0].stp, StpMode::None);
    h.expect(
        gtc(9, 2, Buy, 300, 5),
        &[acc(9, 2, Buy, LimitGtc, 300, 5), fill(9, 2, Buy, 9, 1, 300, 5, TD | MD), trade(Buy, 300, 5), lvl(Sell, 300, 0, 0)],
    );
}

fn stp_engine_default<M: Matcher>() {
    let mut c = cfg();
    c.default_stp = StpMode::CancelTaker;
    let mut h = H::<M>::new(&c);
    h.ok(gtc(9, 1, Sell, 100, 5));
    h.expect(gtc(9, 2, Buy, 100, 5), &[acc(9, 2, Buy, LimitGtc, 100, 5), cxl(9, 2, Buy, 100, 5, STP)]);
    // Account default beats the engine default.
    h.ok(gtc(7, 1, Sell, 100, 5));
    h.expect(
        gtc(7, 2, Buy, 100, 5),
        &[
            acc(7, 2, Buy, LimitGtc, 100, 5),
            fill(7, 2, Buy, 9, 1, 100, 5, TD | MD),
            trade(Buy, 100, 5),
            lvl(Sell, 100, 5, 1),
        ],
    );
}

fn stp_mode_is_the_takers<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    // The maker says cancel_taker, the taker says none: they trade.
    h.ok(with_stp(gtc(1, 1, Sell, 100, 5), StpMode::CancelTaker));
    h.expect(
        with_stp(gtc(1, 2, Buy, 100, 5), StpMode::None),
        &[acc(1, 2, Buy, LimitGtc, 100, 5), fill(1, 2, Buy, 1, 1, 100, 5, TD | MD), trade(Buy, 100, 5), lvl(Sell, 100, 0, 0)],
    );
}

// ------------------------------------------------------------------------------------------------
// Halt / resume.

fn halt_and_resume<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    h.ok(gtc(1, 1, Buy, 100, 5));
    h.expect(Command::set_halted(1, true), &[status(true)]);
    h.reject(gtc(1, 2, Buy, 100, 5), RR::InstrumentHalted);
    h.reject(new(1, 1, 2, Sell, Market, None, 5), RR::InstrumentHalted);
    h.reject(Command::replace(1, 1, 1, None, 4), RR::InstrumentHalted);
    // Other instruments trade on.
    h.ok(new(1, 3, 2, Buy, LimitGtc, Some(100), 5));
    h.expect(Command::set_halted(1, false), &[status(false)]);
    h.ok(gtc(1, 3, Buy, 100, 5));
    h.reject(Command::set_halted(99, true), RR::UnknownInstrument);
    h.reject(Command::set_halted(0, true), RR::UnknownInstrument);
}

/// "Mass cancel and halt/resume: unknown instrument (non-zero) → `unknown_instrument`; unknown
/// `reason` → `malformed_command`."
/// Halt/resume use no `reason`: like every unused field, it is ignored (docs/matching.md).
fn halt_ignores_unused_reason<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    let mut c = Command::set_halted(1, true);
    c.reason = 200;
    h.expect(c, &[status(true)]);
    let mut c = Command::set_halted(1, false);
    c.reason = CR::Admin as u8;
    h.expect(c, &[status(false)]);
}

fn halt_is_visible_in_state_hash<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    let before = h.m.state_hash();
    h.ok(Command::set_halted(1, true));
    let halted = h.m.state_hash();
    assert_ne!(before, halted);
}

// ------------------------------------------------------------------------------------------------
// Event sequencing and the state hash.

fn event_and_command_sequences<M: Matcher>() {
    let mut h = H::<M>::new(&cfg());
    let mut all = Vec::new();
    for c in [gtc(1, 1, Buy, 100, 5), gtc(2, 1, Sell, 100, 3), Command::cancel(1, 1, 1), Command::cancel(1, 1, 1)] {
        let (cmd, evs) = h.run(c);
        assert!(evs.iter().all(|e| e.cmd_seq == cmd.seq));
        all.extend(evs);
    }
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
    }
}

/// Hash over a known state, computed by hand from the doc's definition.
fn state_hash_definition<M: Matcher>() {
    use tickwire_core::hash::StateHasher;
    let mut c = tiny(10, 10, 10);
    c.instruments.push(InstrumentConfig::simple(4, "B"));
    let mut h = H::<M>::new(&c);
    h.ok(gtc(1, 11, Buy, 100, 5)); // seq 1: events 1, 2
    h.ok(gtc(2, 12, Buy, 100, 6)); // events 3, 4
    h.ok(with_stp(gtc(3, 13, Sell, 105, 7), StpMode::CancelBoth)); // events 5, 6
    h.ok(new(2, 4, 14, Sell, PostOnly, Some(50), 1)); // events 7, 8
    h.ok(new(3, 1, 15, Sell, LimitIoc, Some(105), 1)); // events 9..=13: accepted, cancelled
    h.ok(gtc(1, 16, Sell, 100, 2)); // fill/trade with (1, 11): events 11..=14; last trade 100
    h.ok(Command::set_halted(4, true));
    let mut w = StateHasher::default();
    // Book 1: not halted, last trade 100.
    w.word(1).word(0).word(1).word(100);
    w.word(1); // one buy level
    w.word(100).word(9).word(2);
    w.word(1).word(11).word(3).word(StpMode::None as u64).word(LimitGtc as u64);
    w.word(2).word(12).word(6).word(StpMode::None as u64).word(LimitGtc as u64);
    w.word(1); // one sell level
    w.word(105).word(7).word(1);
    w.word(3).word(13).word(7).word(StpMode::CancelBoth as u64).word(LimitGtc as u64);
    // Book 4: halted, no trade.
    w.word(4).word(1).word(0).word(0);
    w.word(0);
    w.word(1);
    w.word(50).word(1).word(1);
    w.word(2).word(14).word(1).word(StpMode::None as u64).word(PostOnly as u64);
    w.word(h.next_ev).word(h.cmd_seq);
    assert_eq!(h.m.state_hash(), w.finish(), "[{}]", M::NAME);
}

for_both_matchers!(
    gtc_rests_without_cross,
    gtc_sweeps_levels_then_rests_remainder,
    trade_happens_at_maker_price,
    price_time_priority,
    exact_fill_sets_both_done_flags,
    ioc_fills_what_crosses_and_cancels_rest,
    fok_fillable_runs_like_ioc,
    fok_not_fillable_is_rejected_without_effect,
    fok_walk_with_stp,
    post_only_rests_or_is_rejected_when_crossing,
    market_without_protection_or_band_is_unlimited,
    market_with_protection_price,
    market_protected_at_band_edge,
    market_band_edge_excludes_beyond_edge,
    market_band_without_reference_is_unlimited,
    validation_order_of_new_order,
    quantity_range_below_min,
    market_needs_no_price_but_limits_do,
    duplicate_id_and_reuse_after_done,
    capacity_orders_max,
    capacity_levels_max,
    capacity_accounts_max,
    capacity_accounts_only_for_resting_orders,
    stp_decrement_and_cancel_market_taker,
    capacity_precedes_post_only_and_fok_checks,
    garbage_unknown_kinds_are_malformed,
    garbage_random_bytes_never_panic,
    cancel_resting_order,
    cancel_partially_filled_reports_open_qty,
    cancel_unknown_or_wrong_instrument,
    cancel_allowed_while_halted,
    replace_qty_down_keeps_priority,
    replace_qty_up_loses_priority,
    replace_after_partial_fill_sets_open_qty,
    replace_price_move_without_cross,
    replace_crossing_trades_and_rests,
    replace_crossing_keeps_mass_cancel_place,
    replace_crossing_uses_own_stp,
    replace_validation,
    mass_cancel_per_instrument_and_all,
    mass_cancel_reasons_and_empty,
    mass_cancel_while_halted,
    stp_none_allows_self_trade,
    stp_cancel_taker,
    stp_cancel_maker,
    stp_cancel_both,
    stp_decrement_and_cancel_maker_larger,
    stp_decrement_and_cancel_taker_larger,
    stp_decrement_and_cancel_equal,
    stp_account_default_and_override,
    stp_engine_default,
    stp_mode_is_the_takers,
    halt_and_resume,
    halt_ignores_unused_reason,
    halt_is_visible_in_state_hash,
    event_and_command_sequences,
    state_hash_definition,
);
