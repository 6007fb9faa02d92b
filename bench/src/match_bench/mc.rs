//! The `matchcore` 0.4 baseline: the same command stream, mapped to matchcore commands.
//!
//! matchcore has no client order ids: an order's id is the sequence number of the command that
//! submitted it, and sequence numbers must be gapless from 0. Because the stream is fixed, the
//! mapping `(account, order_id)` → matchcore id is computed here, before timing, and the whole
//! stream is converted to `matchcore::Command`s up front; the timed loop is only
//! `book.execute(&cmd)` plus counting trades. (So matchcore's figure excludes the id lookup our
//! engine does internally, and the command decoding it does: both in matchcore's favour.)

use matchcore as mc;
use std::collections::HashMap;
use tickwire_core::{Command, CommandKind, OrderType, Side};

/// A converted stream.
pub struct McStream {
    /// Prefill commands (applied untimed).
    pub prefill: Vec<mc::Command>,
    /// Measured commands.
    pub main: Vec<mc::Command>,
}

fn side(s: u8) -> mc::Side {
    if s == Side::Sell as u8 {
        mc::Side::Sell
    } else {
        mc::Side::Buy
    }
}

/// Converts the workload (prefill, main). Commands matchcore has no equivalent for (none in this
/// workload) are turned into a cancel of an unknown id so sequence numbers stay gapless.
pub fn convert(prefill: &[Command], main: &[Command]) -> McStream {
    let mut ids: HashMap<(u32, u64), mc::OrderId> = HashMap::new();
    let mut seq = 0u64;
    let mut conv = |c: &Command| -> mc::Command {
        let meta = mc::CommandMeta { sequence_number: mc::SequenceNumber(seq), timestamp: mc::Timestamp(seq) };
        let key = (c.account, c.order_id);
        let unknown = mc::OrderId(u64::MAX);
        let kind = match CommandKind::from_u8(c.kind) {
            Some(CommandKind::New) => {
                let tif = if c.order_type == OrderType::LimitIoc as u8 { mc::TimeInForce::Ioc } else { mc::TimeInForce::Gtc };
                ids.insert(key, mc::OrderId(seq));
                mc::CommandKind::Submit(mc::SubmitCmd {
                    order: mc::NewOrder::Limit(mc::LimitOrder::new(
                        mc::Price(c.price.max(0) as u64),
                        mc::QuantityPolicy::Standard { quantity: mc::Quantity(c.qty) },
                        mc::OrderFlags::new(side(c.side), false, tif),
                    )),
                })
            }
            Some(CommandKind::Cancel) => mc::CommandKind::Cancel(mc::CancelCmd {
                order_id: ids.get(&key).copied().unwrap_or(unknown),
                order_kind: mc::OrderKind::Limit,
            }),
            Some(CommandKind::Replace) => {
                // The workload's replaces move the price and restate the current open quantity:
                // the nearest matchcore amend is a price-only patch (a quantity patch would
                // restate our book's open quantity, which can differ from matchcore's).
                let patch = match c.price() {
                    Some(p) => mc::LimitOrderPatch::new().with_price(mc::Price(p.max(0) as u64)),
                    None => mc::LimitOrderPatch::new()
                        .with_quantity_policy(mc::QuantityPolicy::Standard { quantity: mc::Quantity(c.qty) }),
                };
                mc::CommandKind::Amend(mc::AmendCmd {
                    order_id: ids.get(&key).copied().unwrap_or(unknown),
                    patch: mc::AmendPatch::Limit(patch),
                })
            }
            _ => mc::CommandKind::Cancel(mc::CancelCmd { order_id: unknown, order_kind: mc::OrderKind::Limit }),
        };
        seq += 1;
        mc::Command { meta, kind }
    };
    let prefill = prefill.iter().map(&mut conv).collect();
    let main = main.iter().map(&mut conv).collect();
    McStream { prefill, main }
}

/// Minimal output counting.
#[derive(Default, Debug, Clone, Copy)]
pub struct McCounter {
    /// Trades (one per maker matched).
    pub fills: u64,
    /// Rejected commands.
    pub rejects: u64,
}

/// Executes one command and counts its output.
#[inline]
pub fn execute(book: &mut mc::OrderBook, cmd: &mc::Command, out: &mut McCounter) {
    match book.execute(cmd) {
        mc::CommandOutcome::Applied(mc::CommandReport::Submit(e) | mc::CommandReport::Amend(e)) => {
            if let Some(m) = e.target_order().match_result() {
                out.fills += m.trades().len() as u64;
            }
        }
        mc::CommandOutcome::Applied(mc::CommandReport::Cancel) => {}
        mc::CommandOutcome::Rejected(_) => out.rejects += 1,
    }
}

/// A fresh book with the prefill applied.
pub fn prefilled(stream: &McStream) -> mc::OrderBook {
    let mut book = mc::OrderBook::new("BENCH");
    let mut sink = McCounter::default();
    for c in &stream.prefill {
        execute(&mut book, c, &mut sink);
    }
    book
}

/// Resting orders in matchcore's limit book.
pub fn resting(book: &mc::OrderBook) -> usize {
    book.limit().orders().len()
}
