//! Slow consumers over real sockets: a client that logs on, asks for a long replay and stops
//! reading is disconnected (logged as a slow consumer) once its output has made no progress for
//! `slow_consumer_ms`; a client that reads gets the same long replay in full although it is many
//! times the per-connection output bound (reports are flow-controlled, not dropped).

mod server_util;

use server_util::*;
use std::time::Duration;
use tickwire_protocol::{ClientMsg, DisconnectReason, ExecReport, ExecType, Logout, ServerMsg};

const ORDERS: u64 = 1500;

#[test]
fn a_reader_gets_a_long_replay_and_a_non_reader_is_cut() {
    let dir = TempDir::new("slow");
    let cfg = test_config("async").replace(
        "[limits]\n",
        "[limits]\nslow_consumer_ms = 500\nsocket_send_buffer = 16384\nmax_outbound_bytes = 16384\n",
    );

    let srv = ServerProc::start(dir.path(), Some(&cfg));

    // Key 1 builds up a long report stream (resting buys far from any sell).
    let mut c = Client::connect(srv.addr).unwrap();
    c.logon(1, 0);
    let mut id = 0;
    while id < ORDERS {
        let batch = (ORDERS - id).min(200);
        for _ in 0..batch {
            id += 1;
            c.send(limit_buy(id, 1, 10)).unwrap();
        }
        let last = id;
        let got = c.until_report(|r: &ExecReport| r.client_order_id == last, Duration::from_secs(30));
        assert!(got.iter().all(|r| r.exec_type == ExecType::Accepted), "{got:?}");
        // Stay under the throttle (burst 400, 2000/s).
        std::thread::sleep(Duration::from_millis(150));
    }
    c.send(ClientMsg::Logout(Logout { reason: DisconnectReason::ClientLogout as u8 })).unwrap();
    c.until_closed(Duration::from_secs(10));

    // A client that asks for everything and does not read.
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect_timeout(&srv.addr.into(), Duration::from_secs(5)).unwrap();
    let mut slow = Client::from_stream(s.into());
    // A long heartbeat interval: the disconnect below must come from the slow-consumer rule,
    // not from the heartbeat timeout this silent client would otherwise hit.
    let a = slow.logon_hb(1, 0, 60_000);
    assert_eq!((a.last_seq, a.replay_from), (ORDERS, 1));
    std::thread::sleep(Duration::from_millis(2500));
    let mut reports = 0u64;
    let mut closed = false;
    for _ in 0..100_000 {
        match slow.recv(Duration::from_secs(10)) {
            Recv::Msg(ServerMsg::ExecReport(_)) => reports += 1,
            Recv::Msg(_) => {}
            Recv::Timeout => break,
            Recv::Closed => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "the non-reading client was not disconnected ({reports} reports read)");
    assert!(reports < ORDERS, "the non-reading client got everything ({reports})");
    let t0 = std::time::Instant::now();
    while srv.line("stderr: tickwire-gateway: ").is_none_or(|l| !l.contains("slow consumer")) {
        assert!(t0.elapsed() < Duration::from_secs(10), "no slow-consumer log line");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A client that reads gets the whole replay, 1500 × 88 bytes through a 16 KiB bound.
    let mut r = Client::connect(srv.addr).unwrap();
    let t0 = std::time::Instant::now();
    let a = loop {
        match r.try_logon(1, 0) {
            Ok(a) => break a,
            Err(e) => {
                assert!(t0.elapsed() < Duration::from_secs(10), "{e}");
                std::thread::sleep(Duration::from_millis(50));
                r = Client::connect(srv.addr).unwrap();
            }
        }
    };
    assert_eq!(a.replay_from, 1);
    let got = r.until_report(|x: &ExecReport| x.session_seq == ORDERS, Duration::from_secs(60));
    assert_eq!(got.len() as u64, ORDERS);
    assert!(got.iter().enumerate().all(|(i, x)| x.session_seq == i as u64 + 1));
}
