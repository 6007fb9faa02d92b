//! The exchange-core-like matching workload, generated once and deterministically (seeded) before
//! anything is timed.
//!
//! One instrument, 2000 accounts, a prefill of 1000 resting GTC orders, then a mix of 9% GTC,
//! 3% IOC, 6% cancel and 82% replace (price move). Sizes are the product of three dice
//! (`a*b*c`, each uniform in 1..=6, so 1..=216, skewed towards small sizes like exchange-core's
//! generator). Prices follow the last trade: passive orders are placed within a band of ticks
//! behind it, some GTC orders and most IOC orders are placed at or through it, and replaces move
//! an order a few ticks, mostly towards the last trade, so some of them cross and trade.
//!
//! The generator runs every command through [`PlainBook`] (same semantics as the engine for this
//! command subset) to know which orders are live, their price and open quantity, and the last
//! trade price; cancels and replaces always name a live order. A feedback on how aggressive new
//! orders and replaces are keeps the book near 1000 resting orders. Order ids come from one
//! global counter, so they are unique per account and never reused.

use crate::match_bench::plain::{OrderKey, PlainBook, PlainSink};
use std::collections::HashMap;
use tickwire_core::{Command, OrderType, Side};

/// Instrument id of the workload.
pub const INSTRUMENT: u32 = 1;
/// Number of accounts (ids 1..=ACCOUNTS).
pub const ACCOUNTS: u32 = 2000;
/// Resting GTC orders entered before the measured stream.
pub const PREFILL: usize = 1000;
/// Price of the first reference (no trade yet).
pub const START_PRICE: i64 = 100_000;
/// Furthest distance (ticks) from the last trade a passive order is placed at.
pub const PASSIVE_BAND: i64 = 48;
/// Furthest distance (ticks) from the last trade a replace moves an order away to.
pub const MOVE_BAND: i64 = 64;

/// splitmix64: a small, fast, seeded PRNG (deterministic across platforms).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the multiply-shift bias is negligible for small n).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `pct`/100.
    #[inline]
    pub fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// What the generator produced (counted, not intended).
#[derive(Clone, Debug, Default)]
pub struct Mix {
    /// GTC orders in the measured stream.
    pub gtc: u64,
    /// Of which traded on arrival.
    pub gtc_crossing: u64,
    /// IOC orders.
    pub ioc: u64,
    /// Of which traded.
    pub ioc_filled: u64,
    /// Cancels.
    pub cancel: u64,
    /// Replaces (all move the price).
    pub replace: u64,
    /// Of which traded.
    pub replace_crossing: u64,
    /// Fills in the measured stream (per the plain book).
    pub fills: u64,
    /// Smallest / largest number of resting orders seen during the measured stream.
    pub resting_min: usize,
    /// See `resting_min`.
    pub resting_max: usize,
    /// Mean number of resting orders over the measured stream.
    pub resting_mean: f64,
    /// Resting orders after the last command.
    pub resting_end: usize,
    /// Lowest / highest trade price seen.
    pub trade_min: i64,
    /// See `trade_min`.
    pub trade_max: i64,
}

impl Mix {
    /// Commands in the measured stream.
    pub fn total(&self) -> u64 {
        self.gtc + self.ioc + self.cancel + self.replace
    }

    /// One line per category, with the share of the stream.
    pub fn describe(&self) -> Vec<String> {
        let t = self.total().max(1) as f64;
        let p = |n: u64| 100.0 * n as f64 / t;
        vec![
            format!(
                "workload: {} commands after a prefill of {PREFILL} GTC; {ACCOUNTS} accounts, 1 instrument",
                self.total()
            ),
            format!(
                "  gtc {:>9} ({:5.2}%), {} of them crossing ({:.1}% of gtc)",
                self.gtc,
                p(self.gtc),
                self.gtc_crossing,
                100.0 * self.gtc_crossing as f64 / self.gtc.max(1) as f64
            ),
            format!(
                "  ioc {:>9} ({:5.2}%), {} of them traded",
                self.ioc,
                p(self.ioc),
                self.ioc_filled
            ),
            format!("  cancel {:>6} ({:5.2}%)", self.cancel, p(self.cancel)),
            format!(
                "  replace {:>5} ({:5.2}%), {} of them crossing",
                self.replace,
                p(self.replace),
                self.replace_crossing
            ),
            format!(
                "  fills {}; resting orders mean {:.0} min {} max {} end {}; trade prices {}..={}",
                self.fills,
                self.resting_mean,
                self.resting_min,
                self.resting_max,
                self.resting_end,
                self.trade_min,
                self.trade_max
            ),
        ]
    }
}

/// The generated command stream.
pub struct Workload {
    /// Every command, seq 1.. in order; the first `prefill` are the prefill.
    pub cmds: Vec<Command>,
    /// Number of prefill commands at the start of `cmds`.
    pub prefill: usize,
    /// What was generated.
    pub mix: Mix,
}

impl Workload {
    /// The prefill commands.
    pub fn prefill_cmds(&self) -> &[Command] {
        &self.cmds[..self.prefill]
    }

    /// The measured commands.
    pub fn main_cmds(&self) -> &[Command] {
        &self.cmds[self.prefill..]
    }
}

/// The generator's view of live orders: a dense vector for uniform picks plus its index.
#[derive(Default)]
struct Live {
    keys: Vec<OrderKey>,
    pos: HashMap<OrderKey, usize>,
    fills: u64,
}

impl Live {
    fn insert(&mut self, k: OrderKey) {
        if !self.pos.contains_key(&k) {
            self.pos.insert(k, self.keys.len());
            self.keys.push(k);
        }
    }

    fn remove(&mut self, k: OrderKey) {
        if let Some(i) = self.pos.remove(&k) {
            self.keys.swap_remove(i);
            if i < self.keys.len() {
                self.pos.insert(self.keys[i], i);
            }
        }
    }
}

impl PlainSink for Live {
    fn fill(&mut self, maker: OrderKey, _price: i64, _qty: u64, maker_left: u64) {
        self.fills += 1;
        if maker_left == 0 {
            self.remove(maker);
        }
    }
}

fn size(rng: &mut SplitMix64) -> u64 {
    (1 + rng.below(6)) * (1 + rng.below(6)) * (1 + rng.below(6))
}

/// Distance (ticks, >= 1) behind the reference for a passive order: denser near the top.
fn passive_offset(rng: &mut SplitMix64) -> i64 {
    let n = PASSIVE_BAND as u64;
    1 + (rng.below(n) * rng.below(n) / n) as i64
}

/// Generates `prefill + main_len` commands from `seed`.
pub fn generate(seed: u64, main_len: usize) -> Workload {
    let mut rng = SplitMix64::new(seed);
    let mut book = PlainBook::new();
    let mut live = Live::default();
    let mut cmds = Vec::with_capacity(PREFILL + main_len);
    let mut next_id: u64 = 1;
    let mut mix = Mix { resting_min: usize::MAX, trade_min: i64::MAX, trade_max: i64::MIN, ..Mix::default() };

    let mut push = |c: Command, book: &mut PlainBook, live: &mut Live| -> u64 {
        let before = live.fills;
        book.handle(&c, live);
        let seq = cmds.len() as u64 + 1;
        cmds.push(c.with_seq(seq, 0));
        live.fills - before
    };

    // Prefill: passive GTC on both sides of the start price.
    for _ in 0..PREFILL {
        let account = 1 + rng.below(ACCOUNTS as u64) as u32;
        let side = if rng.pct(50) { Side::Buy } else { Side::Sell };
        let off = passive_offset(&mut rng);
        let price = if side == Side::Buy { START_PRICE - off } else { START_PRICE + off };
        let id = next_id;
        next_id += 1;
        let c = Command::new_order(account, INSTRUMENT, id, side, OrderType::LimitGtc, Some(price), size(&mut rng), None);
        push(c, &mut book, &mut live);
        if book.order((account, id)).is_some() {
            live.insert((account, id));
        }
    }
    let prefill = PREFILL;
    let mut resting_sum = 0u64;

    for _ in 0..main_len {
        let reference = book.last_trade().unwrap_or(START_PRICE);
        let n_live = live.keys.len();
        // Feedback that keeps the book near PREFILL resting orders without changing the mix:
        // how often GTC and IOC orders are placed through the reference, and how often replaces
        // move towards it, grow with the excess of resting orders.
        let excess = n_live as i64 - PREFILL as i64;
        let aggr_pct = (10 + excess / 4).clamp(0, 60) as u64;
        let ioc_cross_pct = (50 + excess / 2).clamp(5, 100) as u64;
        let toward_pct = (48 + excess / 8).clamp(30, 70) as u64;
        let r = rng.below(100);
        let kind = if r < 9 || n_live == 0 {
            0 // gtc
        } else if r < 12 {
            1 // ioc
        } else if r < 18 {
            2 // cancel
        } else {
            3 // replace
        };
        match kind {
            0 | 1 => {
                let account = 1 + rng.below(ACCOUNTS as u64) as u32;
                let side = if rng.pct(50) { Side::Buy } else { Side::Sell };
                let through = rng.pct(if kind == 1 { ioc_cross_pct } else { aggr_pct });
                let off = if through {
                    -(rng.below(5) as i64)
                } else if kind == 1 {
                    1 + rng.below(3) as i64
                } else {
                    passive_offset(&mut rng)
                };
                let price = if side == Side::Buy { reference - off } else { reference + off };
                let price = price.max(1);
                let id = next_id;
                next_id += 1;
                let ot = if kind == 0 { OrderType::LimitGtc } else { OrderType::LimitIoc };
                let c = Command::new_order(account, INSTRUMENT, id, side, ot, Some(price), size(&mut rng), None);
                let fills = push(c, &mut book, &mut live);
                if kind == 0 {
                    mix.gtc += 1;
                    mix.gtc_crossing += (fills > 0) as u64;
                    if book.order((account, id)).is_some() {
                        live.insert((account, id));
                    }
                } else {
                    mix.ioc += 1;
                    mix.ioc_filled += (fills > 0) as u64;
                }
            }
            2 => {
                let k = live.keys[rng.below(n_live as u64) as usize];
                push(Command::cancel(k.0, INSTRUMENT, k.1), &mut book, &mut live);
                live.remove(k);
                mix.cancel += 1;
            }
            _ => {
                let k = live.keys[rng.below(n_live as u64) as usize];
                let (side, price, qty) = book.order(k).expect("live set matches the book");
                let step = 1 + rng.below(3) as i64;
                // Direction that brings the order nearer the reference (buy: up, sell: down).
                let toward = if side == Side::Buy { 1 } else { -1 };
                let dist_behind = (reference - price) * toward; // > 0: behind the reference
                let mut dir = if rng.pct(toward_pct) { toward } else { -toward };
                if dir == -toward && dist_behind + step > MOVE_BAND {
                    dir = toward;
                }
                let new_price = (price + dir * step).max(1);
                let new_price = if new_price == price { price + 1 } else { new_price };
                let fills = push(Command::replace(k.0, INSTRUMENT, k.1, Some(new_price), qty), &mut book, &mut live);
                mix.replace += 1;
                mix.replace_crossing += (fills > 0) as u64;
                if book.order(k).is_none() {
                    live.remove(k);
                }
            }
        }
        let n = live.keys.len();
        mix.resting_min = mix.resting_min.min(n);
        mix.resting_max = mix.resting_max.max(n);
        resting_sum += n as u64;
        if let Some(p) = book.last_trade() {
            mix.trade_min = mix.trade_min.min(p);
            mix.trade_max = mix.trade_max.max(p);
        }
    }
    debug_assert_eq!(live.keys.len(), book.resting_orders());
    mix.resting_end = book.resting_orders();
    mix.resting_mean = resting_sum as f64 / main_len.max(1) as f64;
    // Fills of the prefill are 0 (it is passive), so every fill counted is in the measured stream.
    mix.fills = live.fills;
    if mix.resting_min == usize::MAX {
        mix.resting_min = 0;
    }
    Workload { cmds, prefill, mix }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_core::event::CountingSink;
    use tickwire_core::{CommandKind, Engine, EngineConfig, InstrumentConfig};

    #[test]
    fn deterministic_and_mix_close_to_target() {
        let a = generate(42, 50_000);
        let b = generate(42, 50_000);
        assert_eq!(a.cmds, b.cmds);
        assert_eq!(a.prefill, PREFILL);
        let seqs_ok = a.cmds.iter().enumerate().all(|(i, c)| c.seq == i as u64 + 1);
        assert!(seqs_ok);
        let m = &a.mix;
        assert_eq!(m.total(), 50_000);
        let share = |n: u64| n as f64 / m.total() as f64;
        assert!((share(m.gtc) - 0.09).abs() < 0.01);
        assert!((share(m.ioc) - 0.03).abs() < 0.01);
        assert!((share(m.cancel) - 0.06).abs() < 0.01);
        assert!((share(m.replace) - 0.82).abs() < 0.01);
        assert!(m.resting_min > 700 && m.resting_max < 1300, "{m:?}");
        assert!(a.main_cmds().iter().all(|c| (1..=216).contains(&c.qty) || c.kind == CommandKind::Cancel as u8));
    }

    #[test]
    fn engine_agrees_with_the_generator() {
        let w = generate(7, 30_000);
        let mut cfg = EngineConfig::single_default();
        cfg.instruments = vec![InstrumentConfig::simple(INSTRUMENT, "T")];
        let mut e = Engine::new(&cfg).unwrap();
        let mut pre = CountingSink::default();
        for c in w.prefill_cmds() {
            e.handle(c, &mut pre);
        }
        let mut s = CountingSink::default();
        for c in w.main_cmds() {
            e.handle(c, &mut s);
        }
        assert_eq!(s.fills, w.mix.fills);
        assert_eq!(e.resting_orders(), w.mix.resting_end);
    }
}
