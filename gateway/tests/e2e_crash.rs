//! End-to-end crash test: the `tickwire` binary (journal `sync`) in a temp dir, driven by four
//! trading sessions, is SIGKILLed at a random moment and restarted, `TICKWIRE_E2E_ROUNDS` times
//! (default 3; `scripts/crash_loop.sh` runs 100). Checked:
//!
//! - on every re-logon the server resends exactly the reports after the client's last seen
//!   sequence: every report a client ever receives has `session_seq` = previous + 1 (no gap, no
//!   duplicate), across kills;
//! - NewOrders whose fate the client did not see before the kill are resent after re-logon: each
//!   client order id is accepted at most once (the resend gets `duplicate_order_id`);
//! - after the last restart a full replay (last_seq_seen 0) equals, report for report, everything
//!   the clients saw before the kills (acknowledged means journaled);
//! - after a clean stop, the server's final state hash equals that of a fresh engine fed the
//!   journal from scratch, and every order the reports leave live is resting in that engine while
//!   every accepted order they show filled or cancelled is not.
//!
//! `TICKWIRE_E2E_SEED=<n>` replays one random schedule (the seed is printed).

mod server_util;

use server_util::*;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tickwire_core::Engine;
use tickwire_journal::{recover, RecoverOptions};
use tickwire_protocol::{Cancel, ClientMsg, ExecReport, ExecType, NewOrder, ServerMsg};

const KEYS: [u64; 4] = [1, 2, 3, 4];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Everything one client knows, kept across connections.
#[derive(Default)]
struct KeyLog {
    key: u64,
    reports: BTreeMap<u64, ExecReport>,
    last_seq: u64,
    next_id: u64,
    orders: HashMap<u64, NewOrder>,
    /// Sent NewOrders without any report yet.
    unacked: Vec<u64>,
    resent: u64,
}

impl KeyLog {
    fn account(&self) -> u32 {
        self.key as u32
    }

    fn take(&mut self, r: ExecReport) {
        assert_eq!(
            r.session_seq,
            self.last_seq + 1,
            "key {}: gap or duplicate in session sequences: got {} after {}",
            self.key,
            r.session_seq,
            self.last_seq
        );
        self.last_seq = r.session_seq;
        self.unacked.retain(|&id| id != r.client_order_id);
        self.reports.insert(r.session_seq, r);
    }
}

/// One connection's life: re-logon, check the replay, resend unacknowledged orders, trade until
/// the server dies (or `max_msgs` were sent and it is quiet).
fn session(addr: std::net::SocketAddr, mut log: KeyLog, seed: u64, max_msgs: u64) -> KeyLog {
    let mut rng = Rng(seed | 1);
    let Ok(mut c) = Client::connect(addr) else { return log };
    let a = match c.try_logon(log.key, log.last_seq) {
        Ok(a) => a,
        Err(_) => return log, // killed during logon
    };
    assert!(a.last_seq >= log.last_seq, "key {}: server sequence went back from {} to {}", log.key, log.last_seq, a.last_seq);
    if a.last_seq > log.last_seq {
        assert_eq!(a.replay_from, log.last_seq + 1, "key {}: replay does not start after the last seen", log.key);
    } else {
        assert_eq!(a.replay_from, 0);
    }
    let target = a.last_seq;
    // The replay.
    while log.last_seq < target {
        match c.recv(Duration::from_secs(20)) {
            Recv::Msg(ServerMsg::ExecReport(r)) => log.take(r),
            Recv::Msg(ServerMsg::Heartbeat(_)) => {}
            Recv::Msg(m) => panic!("key {}: unexpected {m:?} during replay", log.key),
            Recv::Timeout => panic!("key {}: replay stalled at {} of {target}", log.key, log.last_seq),
            Recv::Closed => return log,
        }
    }
    // Resend what was sent but never answered: a second order must never result.
    let pending: Vec<u64> = log.unacked.clone();
    for id in pending {
        let o = log.orders[&id];
        log.resent += 1;
        if c.send(ClientMsg::NewOrder(o)).is_err() {
            return log;
        }
    }
    let mut sent = 0;
    let t0 = Instant::now();
    loop {
        if sent < max_msgs {
            let account = log.account();
            let msg = if rng.below(5) == 0 && log.next_id > 1 {
                let id = 1 + rng.below(log.next_id - 1);
                let inst = log.orders.get(&id).map_or(1, |o| o.instrument);
                ClientMsg::Cancel(Cancel { account, client_order_id: id, instrument: inst })
            } else {
                log.next_id += 1;
                let id = log.next_id - 1;
                let o = NewOrder {
                    side: 1 + rng.below(2) as u8,
                    order_type: if rng.below(4) == 0 { 2 } else { 1 },
                    stp: 0,
                    client_order_id: id,
                    account,
                    instrument: 1 + rng.below(2) as u32,
                    price: Some(95 + rng.below(11) as i64),
                    qty: 1 + rng.below(5),
                };
                log.orders.insert(id, o);
                log.unacked.push(id);
                ClientMsg::NewOrder(o)
            };
            if c.send(msg).is_err() {
                return log;
            }
            sent += 1;
        } else if t0.elapsed() > Duration::from_secs(60) {
            return log; // the kill never came: enough
        }
        let wait = if sent < max_msgs { Duration::from_millis(2) } else { Duration::from_millis(50) };
        loop {
            match c.recv(wait) {
                Recv::Msg(ServerMsg::ExecReport(r)) => log.take(r),
                Recv::Msg(_) => {}
                Recv::Timeout => break,
                Recv::Closed => return log,
            }
        }
    }
}

#[test]
fn sigkill_restart_relogon_and_state_hash() {
    let rounds: u64 = std::env::var("TICKWIRE_E2E_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let seed: u64 = std::env::var("TICKWIRE_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ns() % 1_000_000_007);
    println!("e2e_crash: seed {seed} (TICKWIRE_E2E_SEED), {rounds} kills");
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let dir = TempDir::new("e2e-crash");
    let cfg = test_config("sync");
    let mut logs: Vec<KeyLog> = KEYS.iter().map(|&k| KeyLog { key: k, next_id: 1, ..KeyLog::default() }).collect();

    for round in 0..rounds {
        let mut srv = ServerProc::start(dir.path(), Some(&cfg));
        let handles: Vec<_> = logs
            .drain(..)
            .map(|log| {
                let s = rng.next();
                let addr = srv.addr;
                std::thread::spawn(move || session(addr, log, s, 300))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200 + rng.below(1000)));
        srv.sigkill();
        logs = handles.into_iter().map(|h| h.join().expect("client thread")).collect();
        let seen: u64 = logs.iter().map(|l| l.last_seq).sum();
        println!("round {round}: killed; reports seen so far {seen}");
    }

    // Last restart: everything the clients saw must be replayed identically.
    let mut srv = ServerProc::start(dir.path(), Some(&cfg));
    let mut full: HashMap<u64, Vec<ExecReport>> = HashMap::new();
    let mut clients = Vec::new();
    for log in &logs {
        let mut c = Client::connect(srv.addr).unwrap();
        let a = c.logon(log.key, 0);
        assert!(a.last_seq >= log.last_seq, "key {}: reports lost: server has {}, client saw {}", log.key, a.last_seq, log.last_seq);
        let mut v = Vec::new();
        while (v.len() as u64) < a.last_seq {
            match c.recv(Duration::from_secs(30)) {
                Recv::Msg(ServerMsg::ExecReport(r)) => {
                    assert_eq!(r.session_seq, v.len() as u64 + 1, "key {}: full replay not gapless", log.key);
                    v.push(r);
                }
                Recv::Msg(ServerMsg::Heartbeat(_)) => {}
                other => panic!("key {}: full replay: {:?}", log.key, matches!(other, Recv::Closed)),
            }
        }
        for (seq, r) in &log.reports {
            assert_eq!(&v[*seq as usize - 1], r, "key {}: report {seq} differs after restart", log.key);
        }
        full.insert(log.key, v);
        clients.push(c);
    }
    let final_hash = srv.sigterm();
    drop(clients);

    // The journal from scratch.
    let rec = recover(&dir.path().join("data").join("journal"), RecoverOptions { read_only: true, ..Default::default() })
        .expect("recover");
    let mut engine = Engine::new(&engine_config()).unwrap();
    rec.replay_into(&mut engine, &mut Vec::new()).unwrap();
    assert_eq!(engine.state_hash(), final_hash, "final state differs from a replay from scratch");

    // Order fates: accepted at most once; live ones rest in the engine, finished ones do not.
    let mut accepted_total = 0;
    let mut live_total = 0;
    for log in &logs {
        let mut accepted: HashMap<u64, u32> = HashMap::new();
        let mut done: HashMap<u64, bool> = HashMap::new();
        for r in &full[&log.key] {
            match r.exec_type {
                ExecType::Accepted => *accepted.entry(r.client_order_id).or_default() += 1,
                ExecType::Fill | ExecType::Cancelled => {
                    done.insert(r.client_order_id, true);
                }
                _ => {}
            }
        }
        for (&id, &n) in &accepted {
            assert_eq!(n, 1, "key {}: order {id} accepted {n} times", log.key);
            accepted_total += 1;
            let resting = engine.order(log.account(), id).is_some();
            let finished = done.contains_key(&id);
            assert_eq!(resting, !finished, "key {}: order {id}: resting {resting}, reports say finished {finished}", log.key);
            live_total += resting as u32;
        }
    }
    let resent: u64 = logs.iter().map(|l| l.resent).sum();
    println!("e2e_crash: {accepted_total} orders accepted, {live_total} resting at the end, {resent} resent after re-logon");
    assert!(accepted_total > 0, "no order was ever accepted");
}

/// Which accounts an admin key follows is not in the journal (it follows an account from its
/// first message for it on); the gateway's side log keeps it. After a SIGKILL and a restart the
/// admin's report stream comes back with the same sequences, and the account's later reports
/// still reach it.
#[test]
fn sigkill_restart_keeps_an_admin_keys_report_stream() {
    let dir = TempDir::new("e2e-admin");
    let cfg = test_config("sync")
        .replace("[limits]", "[[keys]]\nid = 20\nrole = \"admin\"\nsecret = \"secret-20\"\naccounts = []\n\n[limits]");
    let wait = Duration::from_secs(20);
    let mut srv = ServerProc::start(dir.path(), Some(&cfg));
    let mut a = Client::connect(srv.addr).unwrap();
    a.logon_hb(20, 0, 60_000);
    a.send(limit_buy(1, 2, 100)).unwrap();
    let mut before = a.until_report(|r| r.session_seq == 1, wait);
    // The same id again: a gateway reject (duplicate_order_id), logged beside the journal.
    a.send(limit_buy(1, 2, 100)).unwrap();
    before.extend(a.until_report(|r| r.session_seq == 2, wait));
    assert_eq!(before.len(), 2);
    assert_eq!(before[0].exec_type, ExecType::Accepted);
    assert_eq!((before[1].exec_type, before[1].reason), (ExecType::Rejected, tickwire_core::RejectReason::DuplicateOrderId as u8), "{before:?}");
    srv.sigkill();

    let mut srv = ServerProc::start(dir.path(), Some(&cfg));
    let mut a = Client::connect(srv.addr).unwrap();
    let la = a.logon_hb(20, 0, 60_000);
    assert_eq!(la.last_seq, 2, "the admin's session sequence changed across the restart");
    assert_eq!(a.until_report(|r| r.session_seq == 2, wait), before);
    // Key 3 sells into the admin's order on account 2: the admin gets account 2's fill.
    let mut t = Client::connect(srv.addr).unwrap();
    t.logon_hb(3, 0, 60_000);
    let sell = NewOrder { side: 2, order_type: 1, stp: 0, client_order_id: 1, account: 3, instrument: 1, price: Some(100), qty: 1 };
    t.send(ClientMsg::NewOrder(sell)).unwrap();
    let after = a.until_report(|r| r.exec_type == ExecType::Fill, wait);
    assert_eq!(after.iter().map(|r| (r.session_seq, r.account)).collect::<Vec<_>>(), vec![(3, 2)]);
    drop((a, t));
    srv.sigterm();
}
