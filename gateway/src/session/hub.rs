//! State shared by every session of one gateway: keys, nonces, which key is logged on, the
//! client order ids used per account, the per-key execution-report streams (replay store), and
//! the open/executed quantities of live orders.

use super::config::{ApiKey, KeyId, SessionConfig, SessionConfigError};
use super::replay::ReplayStore;
use super::{TokenBucket, ADMIN_ACCOUNTS_MAX};
use std::cell::{Ref, RefCell, RefMut};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use tickwire_core::event::EV_LAST_IN_COMMAND;
use tickwire_core::{AccountId, ClientOrderId, Event, EventView, RejectReason, Seq, Side};
use tickwire_protocol::{
    auth, ExecReport, ExecType, Logon, LogonRejectReason, Role, EXEC_GATEWAY, EXEC_LAST_IN_COMMAND,
    EXEC_MAKER, EXEC_PRIORITY_KEPT, EXEC_QTYS_KNOWN,
};

#[derive(Clone, Copy, Debug, Default)]
struct OrderQty {
    leaves: u64,
    cum: u64,
}

struct KeyState {
    key: ApiKey,
    /// Nonce → timestamp of the logon that used it.
    nonces: HashMap<u64, u64>,
    live: bool,
    /// The key's token bucket (from its first message on, kept across connections).
    bucket: Option<TokenBucket>,
    /// Throttle count: +1 per throttled message, −1 per message with a token, 0 when the bucket
    /// is full again.
    throttled: u32,
    /// Accounts an admin key acted for beyond its configured ones, in order (≤
    /// [`ADMIN_ACCOUNTS_MAX`]).
    followed: Vec<AccountId>,
}

/// The verdict on one message's token.
pub(crate) enum Token {
    /// The message may go on.
    Taken,
    /// No token: the message is refused.
    Throttled,
    /// No token, and the throttle count reached `throttle_disconnect_after`: end the session.
    Disconnect,
}

pub(crate) struct HubState {
    pub(crate) cfg: SessionConfig,
    keys: HashMap<KeyId, KeyState>,
    /// Account → keys that receive its reports.
    routes: HashMap<AccountId, Vec<KeyId>>,
    store: Box<dyn ReplayStore>,
    orders: HashMap<(AccountId, ClientOrderId), OrderQty>,
    used_ids: HashMap<AccountId, HashSet<ClientOrderId>>,
    last_engine_seq: Seq,
    /// Keys that received a report from the event being handled.
    touched: Vec<KeyId>,
}

/// What a successful logon grants.
pub(crate) struct Grant {
    pub(crate) role: Role,
    pub(crate) accounts: Vec<AccountId>,
}

/// Shared gateway state. A cheap handle (`Clone`) to one single-threaded state: the event loop
/// owns one `Hub`, gives a clone to every [`super::Session`] it creates, and calls
/// [`Hub::handle_event`] for every engine event (sessions do too; it is idempotent per event).
#[derive(Clone)]
pub struct Hub(pub(crate) Rc<RefCell<HubState>>);

impl Hub {
    /// A hub for `cfg`, keeping reports in `store`.
    pub fn new(cfg: SessionConfig, store: Box<dyn ReplayStore>) -> Result<Hub, SessionConfigError> {
        cfg.validate()?;
        let mut routes: HashMap<AccountId, Vec<KeyId>> = HashMap::new();
        let mut keys = HashMap::new();
        for k in &cfg.keys {
            for &a in &k.accounts {
                let r = routes.entry(a).or_default();
                if !r.contains(&k.id) {
                    r.push(k.id);
                }
            }
            keys.insert(
                k.id,
                KeyState {
                    key: k.clone(),
                    nonces: HashMap::new(),
                    live: false,
                    bucket: None,
                    throttled: 0,
                    followed: Vec::new(),
                },
            );
        }
        Ok(Hub(Rc::new(RefCell::new(HubState {
            cfg,
            keys,
            routes,
            store,
            orders: HashMap::new(),
            used_ids: HashMap::new(),
            last_engine_seq: 0,
            touched: Vec::new(),
        }))))
    }

    pub(crate) fn borrow(&self) -> Ref<'_, HubState> {
        self.0.borrow()
    }

    pub(crate) fn borrow_mut(&self) -> RefMut<'_, HubState> {
        self.0.borrow_mut()
    }

    /// Turns one engine event into execution reports for every key that follows its account(s),
    /// numbered and stored in the replay store. Events must come in engine order; an event whose
    /// `seq` is not above the last one handled is ignored, so calling this more than once per
    /// event (the loop, then each session) is harmless. Returns the number of reports stored.
    pub fn handle_event(&self, ev: &Event) -> usize {
        self.borrow_mut().handle_event(ev)
    }

    /// [`Hub::handle_event`], also listing (in `keys`, cleared first) the keys that received a
    /// report, so that a loop with many connections flushes only their sessions
    /// ([`super::Session::flush_reports`]).
    pub fn handle_event_keys(&self, ev: &Event, keys: &mut Vec<KeyId>) -> usize {
        let mut h = self.borrow_mut();
        let n = h.handle_event(ev);
        keys.clear();
        keys.extend_from_slice(&h.touched);
        n
    }

    /// Highest session sequence assigned to `key` (0 = none).
    pub fn last_seq(&self, key: KeyId) -> Seq {
        self.borrow().store.last_seq(key)
    }

    /// Whether a connection is logged on with `key`.
    pub fn is_live(&self, key: KeyId) -> bool {
        self.borrow().keys.get(&key).is_some_and(|k| k.live)
    }

    /// Starts a new trading session: client order ids may be used again. (Call it when the engine
    /// starts a new trading day; sequence numbers and the replay store are the store's business.)
    pub fn reset_trading_session(&self) {
        self.borrow_mut().used_ids.clear();
    }
}

impl HubState {
    /// Checks a Logon; on success the key is live until [`HubState::release`].
    pub(crate) fn logon(&mut self, m: &Logon, now_ns: u64) -> Result<Grant, LogonRejectReason> {
        let window = self.cfg.logon_window_ns;
        let Some(k) = self.keys.get_mut(&m.key_id) else { return Err(LogonRejectReason::UnknownKey) };
        if !auth::verify(&k.key.secret, m.key_id, m.timestamp_ns, m.nonce, &m.signature) {
            return Err(LogonRejectReason::BadSignature);
        }
        if now_ns.abs_diff(m.timestamp_ns) > window {
            return Err(LogonRejectReason::StaleTimestamp);
        }
        // Forget nonces whose timestamp can no longer pass the window check.
        k.nonces.retain(|_, ts| ts.saturating_add(window) >= now_ns);
        if k.nonces.contains_key(&m.nonce) {
            return Err(LogonRejectReason::NonceReused);
        }
        k.nonces.insert(m.nonce, m.timestamp_ns);
        if k.live {
            return Err(LogonRejectReason::AlreadyLoggedOn);
        }
        k.live = true;
        let mut accounts = k.key.accounts.clone();
        accounts.extend(k.followed.iter().filter(|a| !k.key.accounts.contains(a)));
        Ok(Grant { role: k.key.role, accounts })
    }

    /// Charges one message of `key` to its token bucket (see [`Token`]).
    pub(crate) fn take_token(&mut self, key: KeyId, now_ns: u64) -> Token {
        let (rate, burst, limit) = (self.cfg.rate_per_sec, self.cfg.burst, self.cfg.throttle_disconnect_after);
        let Some(k) = self.keys.get_mut(&key) else { return Token::Throttled };
        let bucket = k.bucket.get_or_insert_with(|| TokenBucket::new(rate, burst, now_ns));
        if bucket.refill(now_ns) {
            k.throttled = 0;
        }
        if bucket.try_take(now_ns) {
            k.throttled = k.throttled.saturating_sub(1);
            return Token::Taken;
        }
        k.throttled = k.throttled.saturating_add(1);
        if k.throttled >= limit {
            Token::Disconnect
        } else {
            Token::Throttled
        }
    }

    /// The key's connection ended.
    pub(crate) fn release(&mut self, key: KeyId) {
        if let Some(k) = self.keys.get_mut(&key) {
            k.live = false;
        }
    }

    /// Makes `key` receive the reports of `account` from now on (an admin acting for it), and
    /// has the store record that (a restart must route the same reports). Err
    /// `CapacityExhausted` when the key already follows [`ADMIN_ACCOUNTS_MAX`] extra accounts.
    pub(crate) fn follow(&mut self, key: KeyId, account: AccountId) -> Result<(), RejectReason> {
        let Some(k) = self.keys.get_mut(&key) else { return Err(RejectReason::NotAuthorised) };
        if k.key.accounts.contains(&account) || k.followed.contains(&account) {
            return Ok(());
        }
        if k.followed.len() >= ADMIN_ACCOUNTS_MAX {
            return Err(RejectReason::CapacityExhausted);
        }
        k.followed.push(account);
        let r = self.routes.entry(account).or_default();
        if !r.contains(&key) {
            r.push(key);
        }
        self.store.record_follow(key, account);
        Ok(())
    }

    /// Consumes a client order id of `account` for the trading session.
    pub(crate) fn use_order_id(&mut self, account: AccountId, id: ClientOrderId) -> Result<(), RejectReason> {
        let max = self.cfg.max_order_ids_per_account;
        let set = self.used_ids.entry(account).or_default();
        if set.contains(&id) {
            return Err(RejectReason::DuplicateOrderId);
        }
        if set.len() >= max {
            return Err(RejectReason::CapacityExhausted);
        }
        set.insert(id);
        Ok(())
    }

    pub(crate) fn last_seq(&self, key: KeyId) -> Seq {
        self.store.last_seq(key)
    }

    pub(crate) fn first_seq(&self, key: KeyId) -> Seq {
        self.store.first_seq(key)
    }

    pub(crate) fn get(&self, key: KeyId, seq: Seq) -> Option<ExecReport> {
        self.store.get(key, seq)
    }

    /// Numbers and stores a report for one key.
    pub(crate) fn push_report(&mut self, key: KeyId, mut r: ExecReport) {
        r.session_seq = self.store.last_seq(key) + 1;
        self.store.append(key, &r);
    }

    /// Stores a report for every key following `r.account`.
    fn route(&mut self, r: ExecReport) -> usize {
        let Some(keys) = self.routes.get(&r.account) else { return 0 };
        // Routes are short (usually one key); index to satisfy the borrow checker.
        for i in 0..keys.len() {
            let key = self.routes[&r.account][i];
            let mut r = r;
            r.session_seq = self.store.last_seq(key) + 1;
            self.store.append(key, &r);
            if !self.touched.contains(&key) {
                self.touched.push(key);
            }
        }
        self.routes[&r.account].len()
    }

    /// A gateway-side reject, reported to `key` only.
    pub(crate) fn gateway_reject(&mut self, key: KeyId, mut r: ExecReport) {
        r.flags |= EXEC_GATEWAY | EXEC_LAST_IN_COMMAND;
        self.push_report(key, r);
    }

    pub(crate) fn handle_event(&mut self, ev: &Event) -> usize {
        self.touched.clear();
        if ev.seq <= self.last_engine_seq {
            return 0;
        }
        self.last_engine_seq = ev.seq;
        let last = if ev.flags & EV_LAST_IN_COMMAND != 0 { EXEC_LAST_IN_COMMAND } else { 0 };
        let base = |t: ExecType, account: AccountId, id: ClientOrderId, side: u8| ExecReport {
            side,
            flags: last,
            engine_seq: ev.seq,
            client_order_id: id,
            account,
            instrument: ev.instrument,
            ..ExecReport::empty(t)
        };
        let with_qtys = |mut r: ExecReport, q: Option<OrderQty>| {
            if let Some(q) = q {
                r.flags |= EXEC_QTYS_KNOWN;
                r.leaves_qty = q.leaves;
                r.cum_qty = q.cum;
            }
            r
        };
        match ev.view() {
            EventView::Accepted { account, order_id, side, order_type, price, qty } => {
                let q = OrderQty { leaves: qty, cum: 0 };
                self.orders.insert((account, order_id), q);
                let mut r = with_qtys(base(ExecType::Accepted, account, order_id, side as u8), Some(q));
                r.price = price;
                r.qty = qty;
                r.order_type = order_type as u8;
                self.route(r)
            }
            EventView::Rejected { account, order_id, reason } => {
                let mut r = base(ExecType::Rejected, account, order_id, ev.side);
                r.reason = reason as u8;
                r.cmd_kind = u8::try_from(ev.aux32).unwrap_or(0);
                self.route(r)
            }
            EventView::Fill {
                trade_id,
                taker_account,
                taker_order_id,
                maker_account,
                maker_order_id,
                aggressor,
                price,
                qty,
                taker_done,
                maker_done,
            } => {
                let taker = self.fill_side(taker_account, taker_order_id, qty, taker_done);
                let mut r = with_qtys(
                    base(
                        if taker_done { ExecType::Fill } else { ExecType::PartialFill },
                        taker_account,
                        taker_order_id,
                        aggressor as u8,
                    ),
                    taker,
                );
                r.price = price;
                r.qty = qty;
                r.trade_id = trade_id;
                let mut n = self.route(r);
                let maker = self.fill_side(maker_account, maker_order_id, qty, maker_done);
                let mut r = with_qtys(
                    base(
                        if maker_done { ExecType::Fill } else { ExecType::PartialFill },
                        maker_account,
                        maker_order_id,
                        Side::opposite(aggressor) as u8,
                    ),
                    maker,
                );
                r.flags |= EXEC_MAKER;
                r.price = price;
                r.qty = qty;
                r.trade_id = trade_id;
                n += self.route(r);
                n
            }
            EventView::Cancelled { account, order_id, side, price, qty, reason } => {
                let q = self.orders.remove(&(account, order_id)).map(|q| OrderQty { leaves: 0, cum: q.cum });
                let mut r = with_qtys(base(ExecType::Cancelled, account, order_id, side as u8), q);
                r.price = price;
                r.qty = qty;
                r.reason = reason as u8;
                self.route(r)
            }
            EventView::Replaced { account, order_id, side, price, qty, priority_kept } => {
                let q = self.orders.get_mut(&(account, order_id)).map(|q| {
                    q.leaves = qty;
                    *q
                });
                let mut r = with_qtys(base(ExecType::Replaced, account, order_id, side as u8), q);
                r.price = price;
                r.qty = qty;
                if priority_kept {
                    r.flags |= EXEC_PRIORITY_KEPT;
                }
                self.route(r)
            }
            EventView::Decremented { account, order_id, side, price, qty } => {
                let q = self.orders.get_mut(&(account, order_id)).map(|q| {
                    q.leaves = qty;
                    *q
                });
                let mut r = with_qtys(base(ExecType::Decremented, account, order_id, side as u8), q);
                r.price = price;
                r.qty = qty;
                r.reason = ev.reason;
                self.route(r)
            }
            EventView::MassCancelled { account, reason, orders } => {
                let mut r = base(ExecType::MassCancelled, account, 0, 0);
                r.reason = reason as u8;
                r.qty = orders;
                self.route(r)
            }
            EventView::Trade { .. }
            | EventView::LevelDelta { .. }
            | EventView::InstrumentStatus { .. }
            | EventView::Invalid => 0,
        }
    }

    /// Applies a fill to a tracked order; its quantities after the fill, if tracked.
    fn fill_side(&mut self, account: AccountId, id: ClientOrderId, qty: u64, done: bool) -> Option<OrderQty> {
        let q = self.orders.get_mut(&(account, id))?;
        q.leaves = if done { 0 } else { q.leaves.saturating_sub(qty) };
        q.cum = q.cum.saturating_add(qty);
        let out = *q;
        if done {
            self.orders.remove(&(account, id));
        }
        Some(out)
    }
}
