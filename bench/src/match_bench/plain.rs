//! The "plain" reference-style order book: `BTreeMap<price, VecDeque<order>>` per side plus a
//! `HashMap` from `(account, order_id)` to the order's side and price. This is the textbook
//! structure the project guide quotes as the plain baseline; it is deliberately left plain (std
//! SipHash map, linear search inside a level on cancel, heap-allocated levels created and
//! dropped as they empty).
//!
//! It implements the subset of docs/matching.md the match workload uses, with the same results:
//! GTC and IOC limit orders, cancel, replace (price and/or quantity, same priority rules), price-
//! time priority, trades at the maker's price, no self-trade prevention (the engine's default
//! STP mode in this bench is `none`). Other order types, mass cancel and halt are rejected. The
//! workload generator also uses it to know which orders are live and the last trade price.

use std::collections::{BTreeMap, HashMap, VecDeque};
use tickwire_core::{Command, CommandKind, OrderType, Side};

/// `(account, client order id)`.
pub type OrderKey = (u32, u64);

/// What the plain book reports while it works (kept minimal so a counting sink is cheap).
pub trait PlainSink {
    /// A fill against resting order `maker` of `qty` at `price`; `maker_left` is the maker's
    /// open quantity after the fill (0 = it left the book).
    fn fill(&mut self, maker: OrderKey, price: i64, qty: u64, maker_left: u64);
    /// A rejected command.
    fn reject(&mut self) {}
}

/// Counts fills and rejects.
#[derive(Default, Debug, Clone, Copy)]
pub struct PlainCounter {
    /// Fills seen.
    pub fills: u64,
    /// Commands rejected.
    pub rejects: u64,
}

impl PlainSink for PlainCounter {
    #[inline]
    fn fill(&mut self, _maker: OrderKey, _price: i64, _qty: u64, _maker_left: u64) {
        self.fills += 1;
    }
    #[inline]
    fn reject(&mut self) {
        self.rejects += 1;
    }
}

#[derive(Clone, Copy, Debug)]
struct Resting {
    key: OrderKey,
    qty: u64,
}

/// The plain book (one instrument).
#[derive(Default)]
pub struct PlainBook {
    bids: BTreeMap<i64, VecDeque<Resting>>,
    asks: BTreeMap<i64, VecDeque<Resting>>,
    orders: HashMap<OrderKey, (Side, i64)>,
    last_trade: Option<i64>,
}

impl PlainBook {
    /// An empty book.
    pub fn new() -> PlainBook {
        PlainBook::default()
    }

    /// Number of resting orders.
    pub fn resting_orders(&self) -> usize {
        self.orders.len()
    }

    /// Last trade price.
    pub fn last_trade(&self) -> Option<i64> {
        self.last_trade
    }


    /// A live order's side, price and open quantity.
    pub fn order(&self, key: OrderKey) -> Option<(Side, i64, u64)> {
        let &(side, price) = self.orders.get(&key)?;
        let level = self.side(side).get(&price)?;
        let r = level.iter().find(|r| r.key == key)?;
        Some((side, price, r.qty))
    }

    fn side(&self, side: Side) -> &BTreeMap<i64, VecDeque<Resting>> {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut BTreeMap<i64, VecDeque<Resting>> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// Applies one command.
    pub fn handle<S: PlainSink>(&mut self, cmd: &Command, out: &mut S) {
        match CommandKind::from_u8(cmd.kind) {
            Some(CommandKind::New) => self.new_order(cmd, out),
            Some(CommandKind::Cancel) => {
                if self.remove((cmd.account, cmd.order_id)).is_none() {
                    out.reject();
                }
            }
            Some(CommandKind::Replace) => self.replace(cmd, out),
            _ => out.reject(),
        }
    }

    fn new_order<S: PlainSink>(&mut self, cmd: &Command, out: &mut S) {
        let (Some(side), Some(ot), Some(price)) =
            (Side::from_u8(cmd.side), OrderType::from_u8(cmd.order_type), cmd.price())
        else {
            return out.reject();
        };
        let key = (cmd.account, cmd.order_id);
        if !matches!(ot, OrderType::LimitGtc | OrderType::LimitIoc)
            || cmd.qty == 0
            || price <= 0
            || self.orders.contains_key(&key)
        {
            return out.reject();
        }
        let left = self.sweep(side, price, cmd.qty, out);
        if left > 0 && ot == OrderType::LimitGtc {
            self.rest(key, side, price, left);
        }
    }

    fn replace<S: PlainSink>(&mut self, cmd: &Command, out: &mut S) {
        let key = (cmd.account, cmd.order_id);
        let Some(&(side, old_price)) = self.orders.get(&key) else {
            return out.reject();
        };
        if cmd.qty == 0 || matches!(cmd.price(), Some(p) if p <= 0) {
            return out.reject();
        }
        let new_price = cmd.price().unwrap_or(old_price);
        if new_price == old_price {
            let level = self.side_mut(side).get_mut(&old_price).expect("order's level exists");
            let pos = level.iter().position(|r| r.key == key).expect("order in its level");
            if cmd.qty <= level[pos].qty {
                level[pos].qty = cmd.qty;
            } else {
                level.remove(pos);
                level.push_back(Resting { key, qty: cmd.qty });
            }
            return;
        }
        self.remove(key);
        let left = self.sweep(side, new_price, cmd.qty, out);
        if left > 0 {
            self.rest(key, side, new_price, left);
        }
    }

    /// Takes liquidity from the opposite side up to `limit`; returns the open quantity left.
    fn sweep<S: PlainSink>(&mut self, side: Side, limit: i64, mut qty: u64, out: &mut S) -> u64 {
        let book = match side {
            Side::Buy => &mut self.asks,
            Side::Sell => &mut self.bids,
        };
        while qty > 0 {
            let mut entry = match side {
                Side::Buy => match book.first_entry() {
                    Some(e) if *e.key() <= limit => e,
                    _ => break,
                },
                Side::Sell => match book.last_entry() {
                    Some(e) if *e.key() >= limit => e,
                    _ => break,
                },
            };
            let price = *entry.key();
            let level = entry.get_mut();
            while qty > 0 {
                let Some(maker) = level.front_mut() else { break };
                let q = qty.min(maker.qty);
                qty -= q;
                maker.qty -= q;
                out.fill(maker.key, price, q, maker.qty);
                self.last_trade = Some(price);
                if maker.qty == 0 {
                    let k = maker.key;
                    level.pop_front();
                    self.orders.remove(&k);
                }
            }
            if level.is_empty() {
                entry.remove();
            }
        }
        qty
    }

    fn rest(&mut self, key: OrderKey, side: Side, price: i64, qty: u64) {
        self.side_mut(side).entry(price).or_default().push_back(Resting { key, qty });
        self.orders.insert(key, (side, price));
    }

    /// Removes a resting order; returns its open quantity.
    fn remove(&mut self, key: OrderKey) -> Option<u64> {
        let (side, price) = self.orders.remove(&key)?;
        let book = self.side_mut(side);
        let level = book.get_mut(&price).expect("order's level exists");
        let pos = level.iter().position(|r| r.key == key).expect("order in its level");
        let r = level.remove(pos).expect("position is valid");
        if level.is_empty() {
            book.remove(&price);
        }
        Some(r.qty)
    }
}
