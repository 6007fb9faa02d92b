//! Decoder robustness and round trips: any bytes give NeedMore, a frame or a typed error, never a
//! panic; every message encodes and decodes back to itself; errors are the documented ones.

use proptest::prelude::*;
use tickwire_protocol::*;

fn arb_client() -> impl Strategy<Value = ClientMsg> {
    let price = prop::option::of(any::<i64>());
    prop_oneof![
        (any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>(), any::<[u8; 32]>()).prop_map(
            |(heartbeat_ms, key_id, timestamp_ns, nonce, last_seq_seen, cancel_on_disconnect, signature)| {
                ClientMsg::Logon(Logon { heartbeat_ms, key_id, timestamp_ns, nonce, last_seq_seen, cancel_on_disconnect, signature })
            }
        ),
        any::<u64>().prop_map(|seq| ClientMsg::Heartbeat(Heartbeat { seq })),
        (any::<[u8; 3]>(), any::<u64>(), any::<u32>(), any::<u32>(), price.clone(), any::<u64>()).prop_map(
            |(e, client_order_id, account, instrument, price, qty)| ClientMsg::NewOrder(NewOrder {
                side: e[0],
                order_type: e[1],
                stp: e[2],
                client_order_id,
                account,
                instrument,
                price,
                qty
            })
        ),
        (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(account, client_order_id, instrument)| ClientMsg::Cancel(
            Cancel { account, client_order_id, instrument }
        )),
        (any::<u64>(), any::<u32>(), any::<u32>(), price, any::<u64>()).prop_map(
            |(client_order_id, account, instrument, price, qty)| ClientMsg::Replace(Replace {
                client_order_id,
                account,
                instrument,
                price,
                qty
            })
        ),
        (any::<u32>(), any::<u32>()).prop_map(|(account, instrument)| ClientMsg::MassCancel(MassCancel { account, instrument })),
        any::<u8>().prop_map(|reason| ClientMsg::Logout(Logout { reason })),
    ]
}

fn arb_server() -> impl Strategy<Value = ServerMsg> {
    let exec = (
        prop::sample::select(ExecType::ALL),
        any::<[u8; 2]>(),
        0u8..32,
        any::<[u64; 3]>(),
        any::<[u32; 2]>(),
        any::<i64>(),
        any::<[u64; 4]>(),
        any::<[u8; 2]>(),
    )
        .prop_map(|(exec_type, b, flags, s, a, price, q, k)| ExecReport {
            exec_type,
            side: b[0],
            reason: b[1],
            flags,
            session_seq: s[0],
            engine_seq: s[1],
            client_order_id: s[2],
            account: a[0],
            instrument: a[1],
            price,
            qty: q[0],
            leaves_qty: q[1],
            cum_qty: q[2],
            trade_id: q[3],
            cmd_kind: k[0],
            order_type: k[1],
        });
    prop_oneof![
        (any::<u32>(), any::<u64>(), any::<u64>(), prop::sample::select(Role::ALL)).prop_map(
            |(heartbeat_ms, last_seq, replay_from, role)| ServerMsg::LogonAccepted(LogonAccepted {
                heartbeat_ms,
                last_seq,
                replay_from,
                role
            })
        ),
        prop::sample::select(LogonRejectReason::ALL).prop_map(|reason| ServerMsg::LogonRejected(LogonRejected { reason })),
        any::<u64>().prop_map(|seq| ServerMsg::Heartbeat(Heartbeat { seq })),
        exec.prop_map(ServerMsg::ExecReport),
        (prop::sample::select(SessionRejectReason::ALL), any::<u8>())
            .prop_map(|(reason, ref_msg_type)| ServerMsg::SessionReject(SessionReject { reason, ref_msg_type })),
        any::<u8>().prop_map(|reason| ServerMsg::Logout(Logout { reason })),
    ]
}

/// Decodes a whole stream the way a receiver does; returns the messages and the final outcome.
fn drain<M>(mut buf: &[u8], decode: impl Fn(&[u8]) -> Decoded<M>) -> (Vec<M>, Option<DecodeError>, usize) {
    let mut v = Vec::new();
    loop {
        match decode(buf) {
            Decoded::Frame(m, n) => {
                assert!(n >= HEADER_LEN && n <= buf.len() && n <= MAX_FRAME);
                v.push(m);
                buf = &buf[n..];
            }
            Decoded::NeedMore(n) => {
                assert!(n > buf.len() && n <= MAX_FRAME, "NeedMore({n}) with {} bytes", buf.len());
                return (v, None, buf.len());
            }
            Decoded::Error(e) => return (v, Some(e), buf.len()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_decode_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let (_, err, _) = drain(&bytes, |b| ClientMsg::decode(b, MAX_FRAME));
        if let Some(e) = err {
            prop_assert!((1..=5).contains(&(e.reason as u8)));
        }
        drain(&bytes, |b| ServerMsg::decode(b, MAX_FRAME));
        drain(&bytes, |b| ClientMsg::decode(b, 0));
    }

    #[test]
    fn valid_headers_with_random_bodies(ty in any::<u8>(), len in 0usize..120, ver in prop::sample::select(vec![1u8, 1, 1, 0, 2]),
                                        body in prop::collection::vec(any::<u8>(), 0..120)) {
        let mut b = vec![0u8; 4];
        b[..2].copy_from_slice(&(len as u16).to_le_bytes());
        b[2] = ty;
        b[3] = ver;
        b.extend_from_slice(&body);
        drain(&b, |b| ClientMsg::decode(b, MAX_FRAME));
        drain(&b, |b| ServerMsg::decode(b, MAX_FRAME));
    }

    #[test]
    fn client_messages_round_trip_in_any_split(msgs in prop::collection::vec(arb_client(), 1..8), cut in any::<prop::sample::Index>()) {
        let mut stream = Vec::new();
        for m in &msgs {
            m.encode_to_vec(&mut stream);
        }
        let (got, err, rest) = drain(&stream, |b| ClientMsg::decode(b, MAX_FRAME));
        prop_assert_eq!(&got, &msgs);
        prop_assert!(err.is_none());
        prop_assert_eq!(rest, 0);
        // Any prefix decodes to a prefix of the messages and then asks for more.
        let k = cut.index(stream.len());
        let (got, err, _) = drain(&stream[..k], |b| ClientMsg::decode(b, MAX_FRAME));
        prop_assert!(err.is_none());
        prop_assert_eq!(&got[..], &msgs[..got.len()]);
    }

    #[test]
    fn server_messages_round_trip(msgs in prop::collection::vec(arb_server(), 1..8)) {
        let mut stream = Vec::new();
        for m in &msgs {
            m.encode_to_vec(&mut stream);
        }
        let (got, err, rest) = drain(&stream, |b| ServerMsg::decode(b, MAX_FRAME));
        prop_assert_eq!(got, msgs);
        prop_assert!(err.is_none());
        prop_assert_eq!(rest, 0);
    }

    #[test]
    fn encode_into_a_slice_matches_encode_to_vec(m in arb_client(), extra in 0usize..8) {
        let mut v = Vec::new();
        m.encode_to_vec(&mut v);
        let mut buf = vec![0xAAu8; v.len() + extra];
        prop_assert_eq!(m.encode(&mut buf), Ok(v.len()));
        prop_assert_eq!(&buf[..v.len()], &v[..]);
        let mut small = vec![0u8; v.len() - 1];
        prop_assert_eq!(m.encode(&mut small), Err(BufferTooSmall { needed: v.len() }));
    }
}

#[test]
fn header_errors_are_typed_and_early() {
    let e = |b: &[u8]| match ClientMsg::decode(b, MAX_FRAME) {
        Decoded::Error(e) => Some(e.reason),
        _ => None,
    };
    // The body is not awaited once the header is wrong.
    assert_eq!(e(&[0xff, 0x7f, 3, 1]), Some(SessionRejectReason::Oversize));
    assert_eq!(e(&[3, 0, 3, 1]), Some(SessionRejectReason::BadLength));
    assert_eq!(e(&[41, 0, 3, 1]), Some(SessionRejectReason::BadLength));
    assert_eq!(e(&[40, 0, 0x99, 1]), Some(SessionRejectReason::UnknownType));
    assert_eq!(e(&[40, 0, 3, 2]), Some(SessionRejectReason::BadVersion));
    assert_eq!(e(&[8, 0, 0x44, 1]), Some(SessionRejectReason::UnknownType), "server type from a client");
    // A good header waits for its body.
    assert_eq!(ClientMsg::decode(&[40, 0, 3, 1, 0], MAX_FRAME), Decoded::NeedMore(40));
    assert_eq!(ClientMsg::decode(&[40, 0], MAX_FRAME), Decoded::NeedMore(HEADER_LEN));
    // A smaller configured maximum.
    assert_eq!(
        ClientMsg::decode(&[80, 0, 1, 1], 64),
        Decoded::Error(DecodeError { reason: SessionRejectReason::Oversize, msg_type: 1 })
    );
}
