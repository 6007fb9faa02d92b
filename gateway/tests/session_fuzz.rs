//! Property tests of the session machine: any mix of valid frames, garbage, splits, engine events,
//! timers and disconnects never panics, keeps its buffer bounded, writes only well-formed server
//! frames with gapless sequences, emits no command before a logon, and is silent once closed.

#[path = "session_harness.rs"]
mod harness;

use harness::*;
use proptest::prelude::*;
use tickwire_core::OrderType;
use tickwire_gateway::session::SessionState;
use tickwire_protocol::*;

#[derive(Clone, Debug)]
enum Op {
    /// Bytes from the client, split at these cut points.
    Bytes(Vec<u8>, Vec<prop::sample::Index>),
    /// Run the emitted commands through the engine.
    Engine,
    /// Advance the clock (ms) and run the timers.
    Wait(u64),
    Disconnect,
}

fn frame(m: ClientMsg) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode_to_vec(&mut v);
    v
}

fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // A valid logon for a random key (its timestamp is T0, so it goes stale as time passes).
        (1u64..6, 0u64..4, 0u64..8, any::<bool>()).prop_map(|(key, nonce, last, cod)| frame(ClientMsg::Logon(logon(key, T0, nonce, last, cod)))),
        (prop::sample::select(vec![10u32, 11, 20]), 0u64..6, 1u8..3, 95i64..106, 1u64..5).prop_map(|(account, id, side, price, qty)| frame(
            ClientMsg::NewOrder(NewOrder {
                side,
                order_type: OrderType::LimitGtc as u8,
                stp: 0,
                client_order_id: id,
                account,
                instrument: 1,
                price: Some(price),
                qty
            })
        )),
        (0u64..6).prop_map(|id| frame(ClientMsg::Cancel(Cancel { account: 10, client_order_id: id, instrument: 1 }))),
        (0u64..6, 1u64..5).prop_map(|(id, qty)| frame(ClientMsg::Replace(Replace {
            client_order_id: id,
            account: 10,
            instrument: 1,
            price: None,
            qty
        }))),
        Just(frame(ClientMsg::MassCancel(MassCancel { account: 10, instrument: 0 }))),
        Just(frame(ClientMsg::Heartbeat(Heartbeat { seq: 0 }))),
        Just(frame(ClientMsg::Logout(Logout { reason: 1 }))),
        prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec(arb_frame(), 1..4), prop::collection::vec(any::<prop::sample::Index>(), 0..3))
            .prop_map(|(fs, cuts)| Op::Bytes(fs.concat(), cuts)),
        2 => Just(Op::Engine),
        2 => (0u64..3000).prop_map(Op::Wait),
        1 => Just(Op::Disconnect),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn session_never_misbehaves(ops in prop::collection::vec(arb_op(), 1..40)) {
        // Small flush batches so that replays span several calls.
        let mut w = World::with_config(tickwire_gateway::session::SessionConfig { max_reports_per_flush: 3, ..config() });
        let mut c = w.connect();
        let mut next_seq: Option<u64> = None;
        for op in ops {
            let before = c.s.state();
            let closed_before = c.s.is_closed();
            match op {
                Op::Bytes(b, cuts) => {
                    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(b.len() + 1)).collect();
                    points.push(b.len());
                    points.sort_unstable();
                    let mut at = 0;
                    for p in points {
                        c.s.handle_bytes(&b[at..p], w.now, &mut c.fx);
                        at = p;
                        prop_assert!(c.s.buffered() <= MAX_FRAME);
                    }
                }
                Op::Engine => {
                    let cmds = std::mem::take(&mut c.fx.commands);
                    let out = std::mem::take(&mut c.fx.out);
                    w.run_commands(cmds, &mut []);
                    c.fx.out = out;
                    c.s.flush_reports(w.now, &mut c.fx);
                }
                Op::Wait(ms) => {
                    w.now += ms * MS;
                    let next = c.s.poll_timeout(w.now, &mut c.fx);
                    if let Some(t) = next {
                        prop_assert!(t >= w.now);
                        prop_assert!(t > w.now || c.s.reports_pending());
                    }
                }
                Op::Disconnect => c.s.handle_disconnect(w.now, &mut c.fx),
            }
            if closed_before {
                prop_assert!(c.fx.out.is_empty() && c.fx.commands.is_empty());
            }
            if c.fx.close.is_some() {
                prop_assert!(c.s.is_closed());
            }
            let msgs = decode_all(&c.fx.out);
            let logged_on = msgs.iter().any(|m| matches!(m, ServerMsg::LogonAccepted(_)));
            if before == SessionState::AwaitingLogon && !logged_on {
                prop_assert!(c.fx.commands.is_empty(), "commands before logon");
            }
            for m in msgs {
                match m {
                    ServerMsg::LogonAccepted(a) => {
                        next_seq = Some(if a.replay_from != 0 { a.replay_from } else { a.last_seq + 1 });
                    }
                    ServerMsg::ExecReport(r) => {
                        prop_assert_eq!(Some(r.session_seq), next_seq, "gapless session sequence");
                        next_seq = Some(r.session_seq + 1);
                    }
                    _ => {}
                }
            }
            c.fx.out.clear();
            c.fx.close = None;
            if c.s.is_closed() {
                // Keep the engine moving (cancel-on-disconnect commands), then reconnect.
                let cmds = std::mem::take(&mut c.fx.commands);
                w.run_commands(cmds, &mut []);
                c = w.connect();
                next_seq = None;
            }
        }
    }
}
