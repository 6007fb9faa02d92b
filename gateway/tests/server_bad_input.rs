//! Hostile clients over real loopback sockets against the `tickwire` binary: garbage bytes, an
//! oversize frame, a truncated frame then close, a message before logon, a flood (throttled,
//! then Logout `throttled`), and a connection storm from one address. A "witness" session
//! logged on from the start must keep trading after each of them.

mod server_util;

use server_util::*;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tickwire_protocol::{DisconnectReason, ExecReport, ExecType, ServerMsg, SessionRejectReason};

/// The witness sends a resting order and must get it accepted.
fn witness_ok(w: &mut Client, id: u64) {
    w.send(limit_buy(id, 1, 10)).unwrap();
    let got = w.until_report(|r: &ExecReport| r.client_order_id == id, Duration::from_secs(20));
    let last = got.last().unwrap();
    assert_eq!(last.exec_type, ExecType::Accepted, "witness order {id}: {got:?}");
}

fn expect_session_reject(c: &mut Client, reason: SessionRejectReason) {
    let got = c.until_closed(Duration::from_secs(20));
    assert!(
        got.iter().any(|m| matches!(m, ServerMsg::SessionReject(r) if r.reason == reason)),
        "expected SessionReject {reason:?}, got {got:?}"
    );
}

#[test]
fn hostile_clients_do_not_disturb_other_sessions() {
    let dir = TempDir::new("badinput");
    let srv = ServerProc::start(dir.path(), Some(&test_config("sync")));
    let addr = srv.addr;
    let mut w = Client::connect(addr).unwrap();
    // The witness sends no heartbeats and the storm below keeps it silent for seconds on a loaded
    // machine: it asks for a 60 s interval so only a real disturbance can drop it.
    w.logon_hb(1, 0, 60_000);
    witness_ok(&mut w, 1);

    // Garbage: "GE" read as a length of 0x4547 > the maximum frame.
    let mut c = Client::connect(addr).unwrap();
    c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    expect_session_reject(&mut c, SessionRejectReason::Oversize);
    witness_ok(&mut w, 2);

    // Random-looking bytes with a small length and a bad version.
    let mut c = Client::connect(addr).unwrap();
    c.send_raw(&[0x10, 0x00, 0x03, 0x09, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]).unwrap();
    expect_session_reject(&mut c, SessionRejectReason::BadVersion);

    // Oversize frame header (1000 bytes announced), body never sent.
    let mut c = Client::connect(addr).unwrap();
    c.send_raw(&[0xe8, 0x03, 0x03, 0x01]).unwrap();
    expect_session_reject(&mut c, SessionRejectReason::Oversize);
    witness_ok(&mut w, 3);

    // An order before logon.
    let mut c = Client::connect(addr).unwrap();
    c.send(limit_buy(5, 2, 10)).unwrap();
    expect_session_reject(&mut c, SessionRejectReason::NotLoggedOn);

    // Logged on, half a NewOrder, then close: dropped; the key is free again afterwards.
    let mut c = Client::connect(addr).unwrap();
    c.logon(2, 0);
    let mut b = Vec::new();
    limit_buy(6, 2, 10).encode_to_vec(&mut b);
    c.send_raw(&b[..17]).unwrap();
    drop(c);
    let t0 = Instant::now();
    let mut c = loop {
        let mut c = Client::connect(addr).unwrap();
        match c.try_logon(2, 0) {
            Ok(_) => break c,
            Err(e) => {
                // The server may not have seen the close yet: key already logged on.
                assert!(t0.elapsed() < Duration::from_secs(20), "key 2 never freed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    // Nothing of order 6 reached the engine: a whole order 6 is new.
    c.send(limit_buy(6, 2, 10)).unwrap();
    let got = c.until_report(|r: &ExecReport| r.client_order_id == 6, Duration::from_secs(20));
    assert_eq!(got.last().unwrap().exec_type, ExecType::Accepted, "{got:?}");
    drop(c);
    witness_ok(&mut w, 4);

    // Flood: far more orders than the bucket holds → throttled rejects, then Logout throttled.
    let mut c = Client::connect(addr).unwrap();
    let t0 = Instant::now();
    loop {
        match c.try_logon(3, 0) {
            Ok(_) => break,
            Err(_) if t0.elapsed() < Duration::from_secs(10) => {
                c = Client::connect(addr).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    }
    let mut flood = Vec::new();
    for i in 0..3000u64 {
        limit_buy(1000 + i, 3, 10).encode_to_vec(&mut flood);
    }
    let mut writer = c.s.try_clone().unwrap();
    let wt = std::thread::spawn(move || {
        use std::io::Write;
        let _ = writer.write_all(&flood); // the server may close first
    });
    let got = c.until_closed(Duration::from_secs(60));
    let _ = wt.join();
    let throttled = got
        .iter()
        .filter(|m| matches!(m, ServerMsg::ExecReport(r) if r.exec_type == ExecType::Rejected && r.reason == 18))
        .count();
    assert!(throttled >= 1, "no throttled reject in {} frames", got.len());
    assert!(
        got.iter().any(|m| matches!(m, ServerMsg::Logout(l) if l.reason == DisconnectReason::Throttled as u8)),
        "no Logout throttled"
    );
    witness_ok(&mut w, 5);

    // Connection storm from 127.0.0.2: beyond the per-address rate the server closes at once.
    let storm_from: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let mut socks = Vec::new();
    for _ in 0..150 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if s.bind(&storm_from.into()).is_err() {
            break; // no 127.0.0.2 here: the storm then comes from 127.0.0.1 below
        }
        if s.connect_timeout(&addr.into(), Duration::from_secs(5)).is_ok() {
            socks.push(TcpStream::from(s));
        }
    }
    if socks.is_empty() {
        for _ in 0..150 {
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                socks.push(s);
            }
        }
    }
    let mut closed = 0;
    for s in socks.drain(..) {
        let mut c = Client::from_stream(s);
        if matches!(c.recv(Duration::from_millis(20)), Recv::Closed) {
            closed += 1;
        }
    }
    assert!(closed >= 50, "only {closed} of 150 storm connections were refused");
    witness_ok(&mut w, 6);
    // A new session still gets in once the second has passed.
    std::thread::sleep(Duration::from_millis(1100));
    let mut c = Client::connect(addr).unwrap();
    c.logon(4, 0);
    c.send(limit_buy(7, 4, 10)).unwrap();
    let got = c.until_report(|r: &ExecReport| r.client_order_id == 7, Duration::from_secs(20));
    assert_eq!(got.last().unwrap().exec_type, ExecType::Accepted);
    witness_ok(&mut w, 7);
}
