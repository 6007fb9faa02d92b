//! The session state machine, stepped with explicit times and a real engine (no sockets).

#[path = "session_harness.rs"]
mod harness;

use harness::*;
use tickwire_core::{CancelReason, Command, CommandKind, OrderType, RejectReason, Side, StpMode};
use tickwire_gateway::session::{SessionState, ReplayStore, MemoryReplayStore};
use tickwire_protocol::*;

fn new_order(account: u32, id: u64, side: Side, price: Option<i64>, qty: u64) -> ClientMsg {
    ClientMsg::NewOrder(NewOrder {
        side: side as u8,
        order_type: OrderType::LimitGtc as u8,
        stp: 0,
        client_order_id: id,
        account,
        instrument: 1,
        price,
        qty,
    })
}

fn logout() -> ClientMsg {
    ClientMsg::Logout(Logout { reason: DisconnectReason::ClientLogout as u8 })
}

#[test]
fn logon_then_order_reaches_the_engine_and_reports_come_back_sequenced() {
    let mut w = World::new();
    let mut c = w.connect();
    let msgs = w.logon(&mut c, TRADER, 1, 0, false);
    assert_eq!(
        msgs,
        vec![ServerMsg::LogonAccepted(LogonAccepted { heartbeat_ms: 1000, last_seq: 0, replay_from: 0, role: Role::Trade })]
    );
    assert_eq!(c.s.state(), SessionState::Active(TRADER));

    assert!(c.send(&new_order(10, 7, Side::Buy, Some(100), 5), w.now).is_empty());
    let expect = Command::new_order(10, 1, 7, Side::Buy, OrderType::LimitGtc, Some(100), 5, None).with_seq(0, w.now);
    assert_eq!(c.fx.commands, vec![expect]);

    let out = w.run(&mut [&mut c]);
    let r = reports(&out[0]);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].exec_type, ExecType::Accepted);
    assert_eq!((r[0].session_seq, r[0].client_order_id, r[0].account, r[0].price, r[0].qty), (1, 7, 10, 100, 5));
    assert_eq!((r[0].leaves_qty, r[0].cum_qty), (5, 0));
    assert_eq!(r[0].flags & EXEC_QTYS_KNOWN, EXEC_QTYS_KNOWN);
    assert_eq!(r[0].order_type, OrderType::LimitGtc as u8);
    assert_eq!(r[0].engine_seq, w.events[0].seq);
}

#[test]
fn fills_partial_fills_cancel_replace_and_mass_cancel_reports() {
    let mut w = World::new();
    let mut a = w.connect();
    let mut b = w.connect();
    w.logon(&mut a, TRADER, 1, 0, false);
    w.logon(&mut b, OTHER, 1, 0, false);

    a.send(&new_order(10, 1, Side::Sell, Some(100), 10), w.now);
    w.run(&mut [&mut a, &mut b]);
    b.send(&new_order(20, 1, Side::Buy, Some(100), 4), w.now);
    let out = w.run(&mut [&mut a, &mut b]);
    let ra = reports(&out[0]);
    let rb = reports(&out[1]);
    // Maker (a): partial fill, leaves 6.
    assert_eq!(ra.len(), 1);
    assert_eq!(ra[0].exec_type, ExecType::PartialFill);
    assert_eq!((ra[0].session_seq, ra[0].qty, ra[0].price, ra[0].leaves_qty, ra[0].cum_qty), (2, 4, 100, 6, 4));
    assert_eq!(ra[0].flags & EXEC_MAKER, EXEC_MAKER);
    assert_eq!(ra[0].side, Side::Sell as u8);
    // Taker (b): accepted then fill.
    assert_eq!(rb.iter().map(|r| r.exec_type).collect::<Vec<_>>(), vec![ExecType::Accepted, ExecType::Fill]);
    assert_eq!((rb[1].session_seq, rb[1].leaves_qty, rb[1].cum_qty), (2, 0, 4));
    assert_eq!(rb[1].trade_id, ra[0].trade_id);
    assert_ne!(rb[1].trade_id, 0);
    assert_eq!(rb[1].flags & EXEC_MAKER, 0);

    // Replace down to 3, then cancel: leaves/cum follow.
    a.send(&ClientMsg::Replace(Replace { client_order_id: 1, account: 10, instrument: 1, price: None, qty: 3 }), w.now);
    let ra = reports(&w.run(&mut [&mut a])[0]);
    assert_eq!(ra[0].exec_type, ExecType::Replaced);
    assert_eq!((ra[0].qty, ra[0].leaves_qty, ra[0].cum_qty), (3, 3, 4));
    assert_eq!(ra[0].flags & EXEC_PRIORITY_KEPT, EXEC_PRIORITY_KEPT);
    a.send(&ClientMsg::Cancel(Cancel { account: 10, client_order_id: 1, instrument: 1 }), w.now);
    let ra = reports(&w.run(&mut [&mut a])[0]);
    assert_eq!(ra[0].exec_type, ExecType::Cancelled);
    assert_eq!(ra[0].reason, CancelReason::UserRequested as u8);
    assert_eq!((ra[0].qty, ra[0].leaves_qty, ra[0].cum_qty), (3, 0, 4));

    // A cancel of an unknown order: engine reject with the command kind.
    a.send(&ClientMsg::Cancel(Cancel { account: 10, client_order_id: 99, instrument: 1 }), w.now);
    let ra = reports(&w.run(&mut [&mut a])[0]);
    assert_eq!(ra[0].exec_type, ExecType::Rejected);
    assert_eq!((ra[0].reason, ra[0].cmd_kind), (RejectReason::UnknownOrder as u8, CommandKind::Cancel as u8));
    assert_eq!(ra[0].flags & EXEC_GATEWAY, 0);

    // Mass cancel of the account: one cancelled per order, then mass_cancelled with the count.
    a.send(&new_order(10, 2, Side::Sell, Some(200), 1), w.now);
    a.send(&new_order(10, 3, Side::Sell, Some(201), 1), w.now);
    w.run(&mut [&mut a]);
    a.send(&ClientMsg::MassCancel(MassCancel { account: 10, instrument: 0 }), w.now);
    let ra = reports(&w.run(&mut [&mut a])[0]);
    let types: Vec<_> = ra.iter().map(|r| r.exec_type).collect();
    assert_eq!(types, vec![ExecType::Cancelled, ExecType::Cancelled, ExecType::MassCancelled]);
    assert_eq!(ra[2].qty, 2);
    assert_eq!(ra[2].reason, CancelReason::MassCancel as u8);
    assert_eq!(ra[2].flags & EXEC_LAST_IN_COMMAND, EXEC_LAST_IN_COMMAND);
    // Sequences are gapless per key.
    let seqs: Vec<_> = ra.iter().map(|r| r.session_seq).collect();
    assert_eq!(seqs, vec![ra[0].session_seq, ra[0].session_seq + 1, ra[0].session_seq + 2]);
}

#[test]
fn decremented_report_under_stp() {
    let mut w = World::new();
    let mut a = w.connect();
    w.logon(&mut a, TRADER, 1, 0, false);
    a.send(&new_order(10, 1, Side::Sell, Some(100), 10), w.now);
    let mut o = NewOrder {
        side: Side::Buy as u8,
        order_type: OrderType::LimitGtc as u8,
        stp: StpMode::DecrementAndCancel as u8,
        client_order_id: 2,
        account: 10,
        instrument: 1,
        price: Some(100),
        qty: 4,
    };
    a.send(&ClientMsg::NewOrder(o), w.now);
    let ra = reports(&w.run(&mut [&mut a])[0]);
    let types: Vec<_> = ra.iter().map(|r| r.exec_type).collect();
    assert_eq!(types, vec![ExecType::Accepted, ExecType::Accepted, ExecType::Decremented, ExecType::Cancelled]);
    assert_eq!((ra[2].client_order_id, ra[2].qty, ra[2].leaves_qty), (1, 6, 6));
    assert_eq!(ra[3].reason, CancelReason::SelfTradePrevention as u8);
    // A bad enum value goes to the engine, which rejects it (not a session error).
    o.client_order_id = 3;
    o.side = 9;
    a.send(&ClientMsg::NewOrder(o), w.now);
    let ra = reports(&w.run(&mut [&mut a])[0]);
    assert_eq!((ra[0].exec_type, ra[0].reason), (ExecType::Rejected, RejectReason::InvalidSide as u8));
    assert!(!a.s.is_closed());
}

#[test]
fn nothing_is_accepted_before_logon() {
    let w = World::new();
    let mut c = w.connect();
    let msgs = c.send(&new_order(10, 1, Side::Buy, Some(1), 1), w.now);
    assert_eq!(
        msgs,
        vec![ServerMsg::SessionReject(SessionReject {
            reason: SessionRejectReason::NotLoggedOn,
            ref_msg_type: MsgType::NewOrder as u8
        })]
    );
    assert!(c.fx.commands.is_empty());
    assert_eq!(c.fx.close, Some(DisconnectReason::ProtocolError));
    assert_eq!(c.s.state(), SessionState::Closed(DisconnectReason::ProtocolError));
    // Closed: later bytes do nothing.
    let msgs = c.send(&ClientMsg::Logon(logon(TRADER, w.now, 1, 0, false)), w.now);
    assert!(msgs.is_empty());
}

fn logon_rejected(w: &World, l: Logon, now: u64) -> LogonRejectReason {
    let mut c = w.connect();
    let msgs = c.send(&ClientMsg::Logon(l), now);
    assert_eq!(c.fx.close, Some(DisconnectReason::LogonRejected));
    assert!(c.s.is_closed());
    match msgs.as_slice() {
        [ServerMsg::LogonRejected(r)] => r.reason,
        other => panic!("expected LogonRejected, got {other:?}"),
    }
}

#[test]
fn logon_failures() {
    let w = World::new();
    let now = w.now;
    assert_eq!(logon_rejected(&w, logon(99, now, 1, 0, false), now), LogonRejectReason::UnknownKey);
    let mut bad = logon(TRADER, now, 1, 0, false);
    bad.signature[0] ^= 1;
    assert_eq!(logon_rejected(&w, bad, now), LogonRejectReason::BadSignature);
    // Signed with another key's secret.
    let mut other = logon(TRADER, now, 1, 0, false);
    other.signature = auth::sign(&secret(OTHER), TRADER, now, 1);
    assert_eq!(logon_rejected(&w, other, now), LogonRejectReason::BadSignature);
    // Timestamp 6 s old or 6 s ahead with a 5 s window.
    assert_eq!(logon_rejected(&w, logon(TRADER, now - 6 * SEC, 2, 0, false), now), LogonRejectReason::StaleTimestamp);
    assert_eq!(logon_rejected(&w, logon(TRADER, now + 6 * SEC, 3, 0, false), now), LogonRejectReason::StaleTimestamp);
    // 4 s old is fine.
    let mut c = w.connect();
    let msgs = c.send(&ClientMsg::Logon(logon(TRADER, now - 4 * SEC, 4, 0, false)), now);
    assert!(matches!(msgs[0], ServerMsg::LogonAccepted(_)));
    // The same key again while logged on.
    assert_eq!(logon_rejected(&w, logon(TRADER, now, 5, 0, false), now), LogonRejectReason::AlreadyLoggedOn);
    c.send(&logout(), now);
    assert_eq!(c.fx.close, Some(DisconnectReason::ClientLogout));
    // Replaying the exact logon (same nonce) is refused; a fresh nonce works.
    assert_eq!(logon_rejected(&w, logon(TRADER, now - 4 * SEC, 4, 0, false), now), LogonRejectReason::NonceReused);
    let mut c = w.connect();
    let msgs = c.send(&ClientMsg::Logon(logon(TRADER, now, 6, 0, false)), now);
    assert!(matches!(msgs[0], ServerMsg::LogonAccepted(_)));
}

#[test]
fn nonces_are_forgotten_once_outside_the_window() {
    let w = World::new();
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 42, 0, false);
    c.send(&logout(), w.now);
    // 10 s later the same nonce with a fresh timestamp is accepted (the old entry expired).
    let later = w.now + 10 * SEC;
    let mut c = w.connect();
    let msgs = c.send(&ClientMsg::Logon(logon(TRADER, later, 42, 0, false)), later);
    assert!(matches!(msgs[0], ServerMsg::LogonAccepted(_)), "{msgs:?}");
}

#[test]
fn second_logon_on_a_session_is_a_session_reject() {
    let w = World::new();
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 1, 0, false);
    let msgs = c.send(&ClientMsg::Logon(logon(TRADER, w.now, 2, 0, false)), w.now);
    assert_eq!(
        msgs,
        vec![ServerMsg::SessionReject(SessionReject {
            reason: SessionRejectReason::AlreadyLoggedOn,
            ref_msg_type: MsgType::Logon as u8
        })]
    );
    assert!(c.s.is_closed());
    // The key is free again.
    assert!(!w.hub.is_live(TRADER));
}

#[test]
fn roles_authorise_accounts() {
    let mut w = World::new();
    // Read key: every order message is NotAuthorised, reported by the gateway, sequenced.
    let mut r = w.connect();
    w.logon(&mut r, READER, 1, 0, false);
    let msgs = r.send(&new_order(10, 1, Side::Buy, Some(1), 1), w.now);
    let rep = reports(&msgs);
    assert_eq!(rep.len(), 1);
    assert_eq!((rep[0].exec_type, rep[0].reason), (ExecType::Rejected, RejectReason::NotAuthorised as u8));
    assert_eq!(rep[0].flags & EXEC_GATEWAY, EXEC_GATEWAY);
    assert_eq!((rep[0].session_seq, rep[0].engine_seq, rep[0].cmd_kind), (1, 0, CommandKind::New as u8));
    let msgs = r.send(&ClientMsg::MassCancel(MassCancel { account: 10, instrument: 0 }), w.now);
    assert_eq!(reports(&msgs)[0].cmd_kind, CommandKind::MassCancel as u8);
    assert!(r.fx.commands.is_empty());

    // Trade key, another account.
    let mut t = w.connect();
    w.logon(&mut t, TRADER, 1, 0, false);
    let rep = reports(&t.send(&new_order(20, 1, Side::Buy, Some(1), 1), w.now));
    assert_eq!(rep[0].reason, RejectReason::NotAuthorised as u8);
    assert!(t.fx.commands.is_empty());
    // Its own account 11 is fine; the read key follows account 10 only, so sees nothing of 11.
    t.send(&new_order(11, 1, Side::Buy, Some(1), 1), w.now);
    assert_eq!(t.fx.commands.len(), 1);
    let out = w.run(&mut [&mut t, &mut r]);
    assert_eq!(reports(&out[0]).len(), 1);
    assert!(out[1].is_empty());
    // An order on account 10 is also reported to the read key (drop copy), in its own sequence.
    t.send(&new_order(10, 1, Side::Buy, Some(1), 1), w.now);
    let out = w.run(&mut [&mut t, &mut r]);
    assert_eq!(reports(&out[1])[0].session_seq, 3);
    assert_eq!(reports(&out[1])[0].account, 10);

    // Admin: any account, and then follows it.
    let mut a = w.connect();
    w.logon(&mut a, ADMIN, 1, 0, false);
    a.send(&new_order(20, 5, Side::Sell, Some(50), 1), w.now);
    assert_eq!(a.fx.commands.len(), 1);
    let out = w.run(&mut [&mut a]);
    assert_eq!(reports(&out[0])[0].exec_type, ExecType::Accepted);
}

#[test]
fn duplicate_client_order_id_is_rejected_by_the_gateway_across_sessions() {
    let mut w = World::new();
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 1, 0, false);
    c.send(&new_order(10, 7, Side::Buy, Some(100), 1), w.now);
    w.run(&mut [&mut c]);
    // Same id again: rejected without reaching the engine (no command).
    let rep = reports(&c.send(&new_order(10, 7, Side::Buy, Some(100), 1), w.now));
    assert_eq!((rep[0].reason, rep[0].flags & EXEC_GATEWAY), (RejectReason::DuplicateOrderId as u8, EXEC_GATEWAY));
    assert!(c.fx.commands.is_empty());
    // Same id on another account is fine.
    c.send(&new_order(11, 7, Side::Buy, Some(100), 1), w.now);
    assert_eq!(c.fx.commands.len(), 1);
    c.fx.commands.clear();
    // After a reconnect (and even once the order is gone) the id stays used for the trading day.
    c.send(&ClientMsg::Cancel(Cancel { account: 10, client_order_id: 7, instrument: 1 }), w.now);
    w.run(&mut [&mut c]);
    c.send(&logout(), w.now);
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 2, 0, false);
    let rep = reports(&c.send(&new_order(10, 7, Side::Buy, Some(100), 1), w.now));
    assert_eq!(rep.last().unwrap().reason, RejectReason::DuplicateOrderId as u8);
    // A new trading session frees the ids.
    w.hub.reset_trading_session();
    c.send(&new_order(10, 7, Side::Buy, Some(100), 1), w.now);
    assert_eq!(c.fx.commands.len(), 1);
}

#[test]
fn token_bucket_throttles_then_disconnects_persistent_abuse() {
    let w = World::new(); // 10 msg/s, burst 20, disconnect after 5 throttled in a row
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 1, 0, true);
    let t = w.now;
    for i in 0..20 {
        c.send(&new_order(10, i, Side::Buy, Some(1), 1), t);
    }
    assert_eq!(c.fx.commands.len(), 20);
    let rep = reports(&c.send(&new_order(10, 100, Side::Buy, Some(1), 1), t));
    assert_eq!(rep[0].reason, RejectReason::Throttled as u8);
    assert_eq!(c.fx.commands.len(), 20);
    // 100 ms later one token is back.
    c.send(&new_order(10, 101, Side::Buy, Some(1), 1), t + 100 * MS);
    assert_eq!(c.fx.commands.len(), 21);
    // The throttled id was not consumed: it can be sent again once a token is back.
    c.send(&new_order(10, 100, Side::Buy, Some(1), 1), t + 200 * MS);
    assert_eq!(c.fx.commands.len(), 22);
    // Four throttled in a row: still connected; the fifth ends the session.
    for i in 0..4 {
        let rep = reports(&c.send(&new_order(10, 200 + i, Side::Buy, Some(1), 1), t + 200 * MS));
        assert_eq!(rep[0].reason, RejectReason::Throttled as u8);
    }
    assert!(!c.s.is_closed());
    c.fx.commands.clear();
    let msgs = c.send(&new_order(10, 300, Side::Buy, Some(1), 1), t + 200 * MS);
    assert_eq!(msgs.last(), Some(&ServerMsg::Logout(Logout { reason: DisconnectReason::Throttled as u8 })));
    assert_eq!(c.fx.close, Some(DisconnectReason::Throttled));
    // Cancel-on-disconnect applies: one mass cancel per account of the key.
    assert_eq!(
        c.fx.commands,
        vec![
            Command::mass_cancel(10, None, CancelReason::CancelOnDisconnect),
            Command::mass_cancel(11, None, CancelReason::CancelOnDisconnect),
        ]
    );
}

#[test]
fn throttle_bucket_and_count_belong_to_the_key_not_the_connection() {
    let w = World::new(); // 10 msg/s, burst 20, disconnect at a throttle count of 5
    let t = w.now;
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 1, 0, false);
    for i in 0..20 {
        c.send(&new_order(10, i, Side::Buy, Some(1), 1), t);
    }
    for i in 0..3 {
        let rep = reports(&c.send(&new_order(10, 100 + i, Side::Buy, Some(1), 1), t));
        assert_eq!(rep[0].reason, RejectReason::Throttled as u8);
    }
    // Reconnecting neither refills the bucket nor clears the count (3): the second throttled
    // message on the new connection (count 5) ends it.
    c.s.handle_disconnect(t, &mut c.fx);
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 2, 0, false);
    let rep = reports(&c.send(&new_order(10, 200, Side::Buy, Some(1), 1), t));
    assert_eq!(rep[0].reason, RejectReason::Throttled as u8);
    assert!(!c.s.is_closed());
    c.send(&new_order(10, 201, Side::Buy, Some(1), 1), t);
    assert_eq!(c.fx.close, Some(DisconnectReason::Throttled));

    // Once the bucket is full again (2 s at 10/s) the count starts over.
    let t = t + 2 * SEC;
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 3, 0, false);
    for i in 0..20 {
        c.send(&new_order(10, 300 + i, Side::Buy, Some(1), 1), t);
    }
    assert_eq!(c.fx.commands.len(), 20);
    for i in 0..4 {
        c.send(&new_order(10, 400 + i, Side::Buy, Some(1), 1), t);
    }
    assert!(!c.s.is_closed());
}

#[test]
fn a_sender_over_its_rate_is_disconnected_even_if_some_messages_get_a_token() {
    // One message in three gets a token (10/s, one every 100 ms, three sent per 100 ms): the count
    // rises by one per round, so the session ends instead of logging rejects forever.
    let w = World::new();
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 1, 0, false);
    let mut t = w.now;
    for i in 0..20 {
        c.send(&new_order(10, i, Side::Buy, Some(1), 1), t);
    }
    let mut id = 100;
    let mut rounds = 0;
    while !c.s.is_closed() {
        assert!(rounds < 10, "still connected after {rounds} rounds over the rate");
        t += 100 * MS;
        for _ in 0..3 {
            c.send(&new_order(10, id, Side::Buy, Some(1), 1), t);
            id += 1;
        }
        rounds += 1;
    }
    assert_eq!(c.fx.close, Some(DisconnectReason::Throttled));
}

#[test]
fn a_read_key_cancel_on_disconnect_flag_cancels_nothing() {
    let w = World::new();
    let mut r = w.connect();
    w.logon(&mut r, READER, 1, 0, true);
    r.s.handle_disconnect(w.now, &mut r.fx);
    assert_eq!(r.fx.close, Some(DisconnectReason::TransportClosed));
    assert!(r.fx.commands.is_empty(), "a drop copy cancelled: {:?}", r.fx.commands);
}

#[test]
fn an_admin_keeps_the_accounts_it_acted_for_across_reconnects() {
    let mut w = World::new();
    let mut a = w.connect();
    w.logon(&mut a, ADMIN, 1, 0, false);
    a.send(&new_order(20, 1, Side::Buy, Some(100), 1), w.now);
    let out = w.run(&mut [&mut a]);
    assert_eq!(reports(&out[0])[0].session_seq, 1);
    a.s.handle_disconnect(w.now, &mut a.fx);
    // Reconnected, it has not acted for account 20 yet in this connection: it still receives the
    // account's reports, and its cancel-on-disconnect still covers it.
    let mut a = w.connect();
    w.logon(&mut a, ADMIN, 2, 1, true);
    let mut o = w.connect();
    w.logon(&mut o, OTHER, 1, 0, false);
    o.send(&new_order(20, 2, Side::Sell, Some(100), 1), w.now);
    let out = w.run(&mut [&mut a, &mut o]);
    let got: Vec<_> = reports(&out[0]).iter().map(|r| (r.session_seq, r.exec_type)).collect();
    assert_eq!(got, vec![(2, ExecType::Accepted), (3, ExecType::Fill), (4, ExecType::Fill)]);
    a.s.handle_disconnect(w.now, &mut a.fx);
    assert_eq!(a.fx.commands, vec![Command::mass_cancel(20, None, CancelReason::CancelOnDisconnect)]);
}

#[test]
fn heartbeats_are_sent_when_idle_and_silence_disconnects() {
    let w = World::new();
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 1, 0, true); // 1000 ms interval
    let t = w.now;
    let (next, msgs) = c.poll(t + 500 * MS);
    assert!(msgs.is_empty());
    assert_eq!(next, Some(t + SEC));
    let (next, msgs) = c.poll(t + SEC);
    assert_eq!(msgs, vec![ServerMsg::Heartbeat(Heartbeat { seq: 0 })]);
    assert_eq!(next, Some(t + 2 * SEC));
    // The client's heartbeat keeps the session alive.
    assert!(c.send(&ClientMsg::Heartbeat(Heartbeat { seq: 0 }), t + 1500 * MS).is_empty());
    let (_, msgs) = c.poll(t + 2 * SEC);
    assert_eq!(msgs, vec![ServerMsg::Heartbeat(Heartbeat { seq: 0 })]);
    assert!(!c.s.is_closed());
    // Nothing received for two intervals after 1.5 s → disconnect at 3.5 s.
    let (next, _) = c.poll(t + 3 * SEC);
    assert_eq!(next, Some(t + 3500 * MS));
    let (next, msgs) = c.poll(t + 3500 * MS);
    assert_eq!(next, None);
    assert_eq!(msgs, vec![ServerMsg::Logout(Logout { reason: DisconnectReason::HeartbeatTimeout as u8 })]);
    assert_eq!(c.fx.close, Some(DisconnectReason::HeartbeatTimeout));
    assert_eq!(c.fx.commands.len(), 2, "cancel-on-disconnect");
}

#[test]
fn heartbeat_interval_is_clamped_and_logon_times_out() {
    let w = World::new();
    let mut c = w.connect();
    let mut l = logon(TRADER, w.now, 1, 0, false);
    l.heartbeat_ms = 1;
    let msgs = c.send(&ClientMsg::Logon(l), w.now);
    assert!(matches!(msgs[0], ServerMsg::LogonAccepted(LogonAccepted { heartbeat_ms: 100, .. })));

    let mut idle = w.connect();
    let (next, msgs) = idle.poll(w.now);
    assert!(msgs.is_empty());
    assert_eq!(next, Some(w.now + 10 * SEC));
    let (next, msgs) = idle.poll(w.now + 10 * SEC);
    assert_eq!(next, None);
    assert_eq!(msgs, vec![ServerMsg::Logout(Logout { reason: DisconnectReason::LogonTimeout as u8 })]);
    assert_eq!(idle.fx.close, Some(DisconnectReason::LogonTimeout));
}

#[test]
fn cancel_on_disconnect_only_without_logout_and_only_when_asked() {
    let w = World::new();
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 1, 0, true);
    c.s.handle_disconnect(w.now, &mut c.fx);
    assert_eq!(c.fx.close, Some(DisconnectReason::TransportClosed));
    assert_eq!(
        c.fx.commands,
        vec![
            Command::mass_cancel(10, None, CancelReason::CancelOnDisconnect),
            Command::mass_cancel(11, None, CancelReason::CancelOnDisconnect),
        ]
    );
    // Idempotent.
    c.fx.clear();
    c.s.handle_disconnect(w.now, &mut c.fx);
    assert!(c.fx.commands.is_empty() && c.fx.close.is_none());

    let mut c = w.connect();
    w.logon(&mut c, TRADER, 2, 0, true);
    let msgs = c.send(&logout(), w.now);
    assert_eq!(msgs, vec![ServerMsg::Logout(Logout { reason: DisconnectReason::ClientLogout as u8 })]);
    assert!(c.fx.commands.is_empty());

    let mut c = w.connect();
    w.logon(&mut c, TRADER, 3, 0, false);
    c.s.handle_disconnect(w.now, &mut c.fx);
    assert!(c.fx.commands.is_empty());

    // An admin's cancel-on-disconnect covers the accounts it acted for.
    let mut a = w.connect();
    w.logon(&mut a, ADMIN, 1, 0, true);
    a.send(&new_order(20, 1, Side::Buy, Some(1), 1), w.now);
    a.fx.commands.clear();
    a.s.handle_disconnect(w.now, &mut a.fx);
    assert_eq!(a.fx.commands, vec![Command::mass_cancel(20, None, CancelReason::CancelOnDisconnect)]);
}

#[test]
fn cancel_on_disconnect_reports_reach_the_key_on_relogon() {
    let mut w = World::new();
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 1, 0, true);
    c.send(&new_order(10, 1, Side::Buy, Some(100), 1), w.now);
    c.send(&new_order(11, 2, Side::Buy, Some(100), 1), w.now);
    let out = w.run(&mut [&mut c]);
    assert_eq!(reports(&out[0]).len(), 2);
    c.s.handle_disconnect(w.now, &mut c.fx);
    // The loop submits the mass cancels; no session of the key is live.
    let cmds = std::mem::take(&mut c.fx.commands);
    w.run_commands(cmds, &mut []);
    let mut c = w.connect();
    let msgs = w.logon(&mut c, TRADER, 2, 2, false);
    assert_eq!(
        msgs[0],
        ServerMsg::LogonAccepted(LogonAccepted { heartbeat_ms: 1000, last_seq: 6, replay_from: 3, role: Role::Trade })
    );
    let rep = reports(&msgs);
    let got: Vec<_> = rep.iter().map(|r| (r.session_seq, r.exec_type, r.reason)).collect();
    let cod = CancelReason::CancelOnDisconnect as u8;
    assert_eq!(
        got,
        vec![
            (3, ExecType::Cancelled, cod),
            (4, ExecType::MassCancelled, cod),
            (5, ExecType::Cancelled, cod),
            (6, ExecType::MassCancelled, cod),
        ]
    );
}

#[test]
fn relogon_replays_missed_reports_in_order_then_goes_live() {
    let mut w = World::new();
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 1, 0, false);
    for id in 1..=3 {
        c.send(&new_order(10, id, Side::Buy, Some(100), 1), w.now);
    }
    let out = w.run(&mut [&mut c]);
    assert_eq!(reports(&out[0]).iter().map(|r| r.session_seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    c.send(&logout(), w.now);
    // While away, another key trades against the resting orders.
    let mut o = w.connect();
    w.logon(&mut o, OTHER, 1, 0, false);
    o.send(&new_order(20, 1, Side::Sell, Some(100), 2), w.now);
    w.run(&mut [&mut o]);
    assert_eq!(w.hub.last_seq(TRADER), 5);

    // The client saw up to 1.
    let mut c = w.connect();
    let msgs = w.logon(&mut c, TRADER, 2, 1, false);
    assert_eq!(
        msgs[0],
        ServerMsg::LogonAccepted(LogonAccepted { heartbeat_ms: 1000, last_seq: 5, replay_from: 2, role: Role::Trade })
    );
    let rep = reports(&msgs);
    let got: Vec<_> = rep.iter().map(|r| (r.session_seq, r.exec_type, r.client_order_id)).collect();
    assert_eq!(
        got,
        vec![
            (2, ExecType::Accepted, 2),
            (3, ExecType::Accepted, 3),
            (4, ExecType::Fill, 1),
            (5, ExecType::Fill, 2),
        ]
    );
    // Live reports continue the sequence.
    c.send(&new_order(10, 9, Side::Buy, Some(90), 1), w.now);
    let out = w.run(&mut [&mut c]);
    assert_eq!(reports(&out[0])[0].session_seq, 6);
    // A client already up to date gets nothing resent.
    c.send(&logout(), w.now);
    let mut c = w.connect();
    let msgs = w.logon(&mut c, TRADER, 3, 6, false);
    assert_eq!(msgs.len(), 1);
    assert!(matches!(msgs[0], ServerMsg::LogonAccepted(LogonAccepted { last_seq: 6, replay_from: 0, .. })));
}

#[test]
fn replay_from_the_oldest_retained_when_older_ones_are_gone() {
    let mut store = MemoryReplayStore::new(2);
    for seq in 1..=5 {
        store.append(TRADER, &ExecReport { session_seq: seq, account: 10, ..ExecReport::empty(ExecType::Accepted) });
    }
    let hub = tickwire_gateway::session::Hub::new(config(), Box::new(store)).unwrap();
    let mut c = Conn { s: tickwire_gateway::session::Session::new(hub, T0), fx: Default::default() };
    let msgs = c.send(&ClientMsg::Logon(logon(TRADER, T0, 1, 1, false)), T0);
    assert!(matches!(msgs[0], ServerMsg::LogonAccepted(LogonAccepted { last_seq: 5, replay_from: 4, .. })));
    assert_eq!(reports(&msgs).iter().map(|r| r.session_seq).collect::<Vec<_>>(), vec![4, 5]);
}

fn malformed(bytes: &[u8]) -> (SessionRejectReason, u8) {
    let w = World::new();
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 1, 0, true);
    let msgs = c.send_raw(bytes, w.now);
    assert_eq!(c.fx.close, Some(DisconnectReason::ProtocolError));
    assert_eq!(c.fx.commands.len(), 2, "cancel-on-disconnect on a protocol error");
    match msgs.as_slice() {
        [ServerMsg::SessionReject(r)] => (r.reason, r.ref_msg_type),
        other => panic!("expected one SessionReject, got {other:?}"),
    }
}

#[test]
fn malformed_frames_get_a_session_reject_then_close() {
    use SessionRejectReason::*;
    // Unknown type, server-only type.
    assert_eq!(malformed(&[8, 0, 0x30, 1, 0, 0, 0, 0]), (UnknownType, 0x30));
    assert_eq!(malformed(&[8, 0, 0x42, 1, 1, 0, 0, 0]), (UnknownType, 0x42));
    // Length below the header, length not the type's size, oversize.
    assert_eq!(malformed(&[2, 0, 2, 1]), (BadLength, 2));
    assert_eq!(malformed(&[15, 0, 2, 1]), (BadLength, 2));
    assert_eq!(malformed(&[0xff, 0xff, 3, 1]), (Oversize, 3));
    // Version.
    assert_eq!(malformed(&[16, 0, 2, 9]), (BadVersion, 2));
    // Reserved bytes not zero; price absent but non-zero.
    let mut hb = bytes(&Heartbeat { seq: 1 });
    hb[5] = 1;
    assert_eq!(malformed(&hb), (InvalidField, 2));
    let mut no = bytes(&NewOrder {
        side: 1,
        order_type: 1,
        stp: 0,
        client_order_id: 1,
        account: 10,
        instrument: 1,
        price: None,
        qty: 1,
    });
    no[24] = 1;
    assert_eq!(malformed(&no), (InvalidField, 3));
    // A valid frame followed by garbage in the same read: the first is handled, then the reject.
    let w = World::new();
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 1, 0, false);
    let mut b = Vec::new();
    new_order(10, 1, Side::Buy, Some(1), 1).encode_to_vec(&mut b);
    b.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    let msgs = c.send_raw(&b, w.now);
    assert_eq!(c.fx.commands.len(), 1);
    assert!(matches!(msgs.as_slice(), [ServerMsg::SessionReject(_)]));
}

#[test]
fn frames_split_anywhere_are_reassembled() {
    let w = World::new();
    let mut all = Vec::new();
    ClientMsg::Logon(logon(TRADER, w.now, 1, 0, false)).encode_to_vec(&mut all);
    for id in 0..5 {
        new_order(10, id, Side::Buy, Some(100), 1).encode_to_vec(&mut all);
    }
    ClientMsg::Heartbeat(Heartbeat { seq: 0 }).encode_to_vec(&mut all);
    for chunk in [1usize, 2, 3, 7, 13, 64, 1000] {
        let w = World::new();
        let mut c = w.connect();
        let mut msgs = Vec::new();
        for part in all.chunks(chunk) {
            msgs.extend(c.send_raw(part, w.now));
            assert!(c.s.buffered() <= MAX_FRAME);
        }
        assert!(matches!(msgs[0], ServerMsg::LogonAccepted(_)), "chunk {chunk}");
        assert_eq!(c.fx.commands.len(), 5, "chunk {chunk}");
        assert_eq!(c.s.buffered(), 0);
        assert!(!c.s.is_closed());
    }
    let _ = w;
}

#[test]
fn server_disconnect_sends_logout_and_frees_the_key() {
    let w = World::new();
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 1, 0, true);
    assert!(w.hub.is_live(TRADER));
    c.s.disconnect(DisconnectReason::ServerShutdown, w.now, &mut c.fx);
    assert_eq!(decode_all(&c.fx.out), vec![ServerMsg::Logout(Logout { reason: DisconnectReason::ServerShutdown as u8 })]);
    assert_eq!(c.fx.commands.len(), 2);
    assert!(!w.hub.is_live(TRADER));
    // Dropping a live session also frees its key.
    let mut c = w.connect();
    w.logon(&mut c, TRADER, 2, 0, false);
    drop(c);
    assert!(!w.hub.is_live(TRADER));
}

#[test]
fn a_long_replay_is_written_in_batches_driven_by_poll_timeout() {
    let mut store = MemoryReplayStore::new(100);
    for seq in 1..=10 {
        store.append(TRADER, &ExecReport { session_seq: seq, account: 10, ..ExecReport::empty(ExecType::Accepted) });
    }
    let cfg = tickwire_gateway::session::SessionConfig { max_reports_per_flush: 4, ..config() };
    let hub = tickwire_gateway::session::Hub::new(cfg, Box::new(store)).unwrap();
    let mut c = Conn { s: tickwire_gateway::session::Session::new(hub, T0), fx: Default::default() };
    let msgs = c.send(&ClientMsg::Logon(logon(TRADER, T0, 1, 0, false)), T0);
    assert!(matches!(msgs[0], ServerMsg::LogonAccepted(LogonAccepted { last_seq: 10, replay_from: 1, .. })));
    let mut seqs: Vec<u64> = reports(&msgs).iter().map(|r| r.session_seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert!(c.s.reports_pending());
    let (next, msgs) = c.poll(T0 + 1);
    assert_eq!(next, Some(T0 + 1));
    seqs.extend(reports(&msgs).iter().map(|r| r.session_seq));
    let (next, msgs) = c.poll(T0 + 2);
    seqs.extend(reports(&msgs).iter().map(|r| r.session_seq));
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert!(!c.s.reports_pending());
    assert_eq!(next, Some(T0 + 2 + SEC), "back to the heartbeat deadline");
}

#[test]
fn the_hub_names_the_keys_an_event_concerns() {
    let mut w = World::new();
    let mut t = w.connect();
    w.logon(&mut t, TRADER, 1, 0, false);
    t.send(&new_order(10, 1, Side::Buy, Some(100), 1), w.now);
    let cmd = t.fx.commands.pop().unwrap().with_seq(1, w.now);
    let mut evs = Vec::new();
    w.engine.handle(&cmd, &mut evs);
    let mut keys = Vec::new();
    // Account 10 is followed by the trader and the read key.
    assert_eq!(w.hub.handle_event_keys(&evs[0], &mut keys), 2);
    keys.sort_unstable();
    assert_eq!(keys, vec![TRADER, READER]);
    // Handled already: nothing more.
    assert_eq!(w.hub.handle_event_keys(&evs[0], &mut keys), 0);
    assert!(keys.is_empty());
    t.s.flush_reports(w.now, &mut t.fx);
    assert_eq!(reports(&decode_all(&t.fx.out)).len(), 1);
}
