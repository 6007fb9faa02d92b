use super::book::MdBook;
use super::sync::{Applied, InstrumentSync, SyncError};
use super::*;
use proptest::prelude::*;

fn lv(price: Price, qty: Qty, orders: u32) -> Level {
    Level { price, qty, orders }
}

fn up(side: Side, price: Price, qty: Qty, orders: u32) -> LevelUpdate {
    LevelUpdate { side, price, qty, orders }
}

type Example = (&'static str, Vec<u8>, Vec<(usize, String)>);

/// The example messages of docs/market-data.md, with each field's (size, name).
fn examples() -> Vec<Example> {
    let f = |v: &[(usize, &str)]| v.iter().map(|&(n, s)| (n, s.to_string())).collect::<Vec<_>>();
    let level = |side: &str| f(&[(8, "price"), (8, "qty"), (4, "orders"), (1, side), (3, "reserved")]);
    let mut out = Vec::new();

    let mut book = MdBook::new();
    book.apply(&up(Side::Buy, 10_050, 300, 2));
    book.apply(&up(Side::Sell, 10_100, 150, 1));
    let mut b = Vec::new();
    encode_snapshot(&mut b, 7, 41, false, book.crc(), &[lv(10_050, 300, 2)], &[lv(10_100, 150, 1)]);
    let mut fields = f(&[
        (1, "type = 1 (Snapshot)"),
        (1, "version = 1"),
        (2, "flags (bit 0: halted)"),
        (4, "instrument = 7"),
        (8, "seq = 41"),
        (4, "bid_count = 1"),
        (4, "ask_count = 1"),
        (4, "crc"),
        (4, "reserved"),
    ]);
    fields.extend(level("side = 1 (buy)"));
    fields.extend(level("side = 2 (sell)"));
    out.push(("Snapshot: instrument 7 at seq 41, bid 300 @ 10050 (2 orders), ask 150 @ 10100 (1 order)", b, fields));

    let mut b = Vec::new();
    let (tb, ta) = ([lv(10_050, 300, 2)], [lv(10_100, 150, 1)]);
    encode_top(&mut b, 7, 41, 12, false, book::levels_crc(&tb, &ta), &tb, &ta);
    let mut fields = f(&[
        (1, "type = 1 (Snapshot)"),
        (1, "version = 1"),
        (2, "flags = 2 (bit 1: top-N view; bit 0: halted)"),
        (4, "instrument = 7"),
        (8, "seq = 41 (instrument sequence reflected)"),
        (4, "bid_count = 1"),
        (4, "ask_count = 1"),
        (4, "crc (of the levels carried)"),
        (4, "update = 12 (top-N channel counter)"),
    ]);
    fields.extend(level("side = 1 (buy)"));
    fields.extend(level("side = 2 (sell)"));
    out.push(("Top-N view (channel 2, N = 1): update 12, reflecting instrument seq 41", b, fields));

    book.apply(&up(Side::Buy, 10_050, 0, 0));
    book.apply(&up(Side::Buy, 10_040, 500, 3));
    let mut b = Vec::new();
    encode_delta_batch(
        &mut b,
        7,
        42,
        1_700_000_000_123_456_789,
        book.crc(),
        &[up(Side::Buy, 10_050, 0, 0), up(Side::Buy, 10_040, 500, 3)],
    );
    let mut fields = f(&[
        (1, "type = 2 (DeltaBatch)"),
        (1, "version = 1"),
        (2, "count = 2"),
        (4, "instrument = 7"),
        (8, "first_seq = 42"),
        (8, "last_seq = 43"),
        (8, "ts_ns"),
        (4, "crc (book after the batch)"),
        (4, "reserved"),
    ]);
    fields.extend(level("side = 1 (buy); qty 0: level removed"));
    fields.extend(level("side = 1 (buy)"));
    out.push(("DeltaBatch: seq 42..=43, bid level 10050 removed, bid 500 @ 10040 (3 orders)", b, fields));

    let mut b = Vec::new();
    Trade { instrument: 7, seq: 44, trade_id: 9001, price: 10_100, qty: 150, aggressor: Side::Buy, ts_ns: 1_700_000_000_123_456_789 }
        .encode(&mut b);
    let fields = f(&[
        (1, "type = 3 (Trade)"),
        (1, "version = 1"),
        (2, "aggressor side = 1 (buy)"),
        (4, "instrument = 7"),
        (8, "seq = 44"),
        (8, "trade_id = 9001"),
        (8, "price = 10100"),
        (8, "qty = 150"),
        (8, "ts_ns"),
    ]);
    out.push(("Trade: seq 44, 150 @ 10100, buyer aggressor", b, fields));

    let mut b = Vec::new();
    Candle {
        instrument: 7,
        seq: 45,
        interval: CandleInterval::Sec1,
        start_ns: 1_700_000_000_000_000_000,
        open: 10_100,
        high: 10_120,
        low: 10_090,
        close: 10_110,
        volume: 1_000,
        trades: 12,
    }
    .encode(&mut b);
    let fields = f(&[
        (1, "type = 4 (Candle)"),
        (1, "version = 1"),
        (2, "interval = 1 (1 s; 2 = 1 min)"),
        (4, "instrument = 7"),
        (8, "seq = 45 (candle sequence)"),
        (8, "start_ns"),
        (8, "open = 10100"),
        (8, "high = 10120"),
        (8, "low = 10090"),
        (8, "close = 10110"),
        (8, "volume = 1000"),
        (4, "trades = 12"),
        (4, "reserved"),
    ]);
    out.push(("Candle: candle seq 45, the 1 s interval starting at start_ns (channel 8)", b, fields));

    let mut b = Vec::new();
    Status { instrument: 7, seq: 46, halted: true, engine_seq: 123_456 }.encode(&mut b);
    let fields = f(&[
        (1, "type = 5 (InstrumentStatus)"),
        (1, "version = 1"),
        (2, "halted = 1"),
        (4, "instrument = 7"),
        (8, "seq = 46"),
        (8, "engine_seq = 123456"),
    ]);
    out.push(("InstrumentStatus: seq 46, halted", b, fields));

    let mut b = Vec::new();
    Heartbeat { nonce: 77, server_ns: 1_700_000_000_500_000_000 }.encode(&mut b);
    let fields = f(&[
        (1, "type = 6 (Heartbeat)"),
        (1, "version = 1"),
        (2, "reserved"),
        (4, "instrument = 0"),
        (8, "nonce = 77"),
        (8, "server_ns"),
    ]);
    out.push(("Heartbeat answering Ping 77", b, fields));

    let mut b = Vec::new();
    ErrorMsg::new(ErrorCode::UnknownInstrument, 99, 0).encode(&mut b);
    let fields = f(&[
        (1, "type = 7 (Error)"),
        (1, "version = 1"),
        (2, "code = 1 (unknown_instrument)"),
        (4, "instrument = 99"),
        (8, "detail = 0"),
    ]);
    out.push(("Error: unknown instrument 99", b, fields));

    let head = |t: &str, i: &str| f(&[(1, t), (1, "version = 1"), (2, "reserved"), (4, i)]);
    out.push((
        "Subscribe to instrument 7 (channels 0: the book stream, as before channels existed)",
        ClientMsg::Subscribe { instrument: 7 }.to_vec(),
        f(&[(1, "type = 0x81 (Subscribe)"), (1, "version = 1"), (2, "channels = 0 (book)"), (4, "instrument = 7")]),
    ));
    out.push((
        "Subscribe to instrument 7, trades and candles only",
        ClientMsg::SubscribeChannels { instrument: 7, channels: CH_TRADES | CH_CANDLES }.to_vec(),
        f(&[
            (1, "type = 0x81 (Subscribe)"),
            (1, "version = 1"),
            (2, "channels = 0x0c (4 trades | 8 candles)"),
            (4, "instrument = 7"),
        ]),
    ));
    out.push((
        "Unsubscribe from instrument 7",
        ClientMsg::Unsubscribe { instrument: 7 }.to_vec(),
        head("type = 0x82 (Unsubscribe)", "instrument = 7"),
    ));
    let mut fields = head("type = 0x83 (Resume)", "instrument = 7");
    fields.push((8, "last_seq = 43".into()));
    out.push(("Resume instrument 7 after seq 43", ClientMsg::Resume { instrument: 7, last_seq: 43 }.to_vec(), fields));
    let mut fields = head("type = 0x84 (Ping)", "instrument = 0");
    fields.push((8, "nonce = 77".into()));
    out.push(("Ping 77", ClientMsg::Ping { nonce: 77 }.to_vec(), fields));
    out
}

fn render_examples() -> String {
    let mut s = String::new();
    for (title, bytes, fields) in examples() {
        assert_eq!(fields.iter().map(|f| f.0).sum::<usize>(), bytes.len(), "{title}: field sizes");
        s += &format!("{title} ({} bytes):\n\n```text\n", bytes.len());
        let mut off = 0;
        for (n, name) in fields {
            let hex: Vec<String> = bytes[off..off + n].iter().map(|b| format!("{b:02x}")).collect();
            s += &format!("{off:3}  {:<24} {name}\n", hex.join(" "));
            off += n;
        }
        s += "```\n\n";
    }
    s
}

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/market-data.md");
const BEGIN: &str = "<!-- BEGIN generated examples (protocol/src/md/tests.rs) -->\n";
const END: &str = "<!-- END generated examples -->";

/// The hex examples in docs/market-data.md are this test's output. `MD_DOC_WRITE=1` rewrites them.
#[test]
fn doc_examples_match_code() {
    let gen = render_examples();
    let doc = std::fs::read_to_string(DOC).expect("docs/market-data.md");
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else { panic!("markers missing in {DOC}") };
    let current = &doc[b + BEGIN.len()..e];
    if std::env::var_os("MD_DOC_WRITE").is_some() {
        let new = format!("{}{}{}{}", &doc[..b + BEGIN.len()], gen, "", &doc[e..]);
        std::fs::write(DOC, new).expect("write doc");
        return;
    }
    assert_eq!(current, gen, "docs/market-data.md examples are stale: run with MD_DOC_WRITE=1");
}

#[test]
fn examples_decode_back() {
    for (title, bytes, _) in examples() {
        if bytes[0] & 0x80 != 0 {
            let m = ClientMsg::decode(&bytes).unwrap_or_else(|e| panic!("{title}: {e:?}"));
            assert_eq!(m.to_vec(), bytes);
        } else {
            ServerMsg::decode(&bytes).unwrap_or_else(|e| panic!("{title}: {e:?}"));
        }
    }
}

#[test]
fn snapshot_and_delta_roundtrip() {
    let bids = [lv(100, 5, 1), lv(99, 7, 2)];
    let asks = [lv(101, 3, 1)];
    let mut b = Vec::new();
    encode_snapshot(&mut b, 3, 10, true, 0xdead_beef, &bids, &asks);
    assert_eq!(b.len(), snapshot_len(2, 1));
    let ServerMsg::Snapshot(s) = ServerMsg::decode(&b).unwrap() else { panic!() };
    assert_eq!((s.instrument, s.seq, s.halted, s.crc), (3, 10, true, 0xdead_beef));
    let got: Vec<_> = s.bids.iter().map(|u| lv(u.price, u.qty, u.orders)).collect();
    assert_eq!(got, bids);
    assert_eq!(s.asks.len(), 1);

    let ups = [up(Side::Sell, 101, 0, 0), up(Side::Buy, 98, 1, 1), up(Side::Sell, 102, 4, 2)];
    let mut b = Vec::new();
    encode_delta_batch(&mut b, 3, 11, 5, 42, &ups);
    let ServerMsg::DeltaBatch(d) = ServerMsg::decode(&b).unwrap() else { panic!() };
    assert_eq!((d.first_seq, d.last_seq, d.ts_ns, d.crc), (11, 13, 5, 42));
    assert_eq!(d.updates.iter().collect::<Vec<_>>(), ups);
}

#[test]
fn bad_inputs_are_refused() {
    let mut b = Vec::new();
    encode_snapshot(&mut b, 3, 10, false, 0, &[lv(100, 5, 1)], &[]);
    let mut wrong_side = b.clone();
    wrong_side[SNAPSHOT_HEADER + 20] = 2;
    assert_eq!(ServerMsg::decode(&wrong_side), Err(DecodeError::BadField));
    assert_eq!(ServerMsg::decode(&b[..b.len() - 1]), Err(DecodeError::BadLength));
    let mut v = b.clone();
    v[1] = 9;
    assert_eq!(ServerMsg::decode(&v), Err(DecodeError::Version(9)));
    assert_eq!(ClientMsg::decode(&[0x81, 1, 0, 0, 1, 0, 0]), Err(DecodeError::Short));
    assert_eq!(ClientMsg::decode(&[0x81, 1, 0, 0, 1, 0, 0, 0, 0]), Err(DecodeError::BadLength));
    assert_eq!(ClientMsg::decode(&[0x01, 1, 0, 0, 1, 0, 0, 0]), Err(DecodeError::UnknownType(1)));
    // Channel bits: defined ones only, and only on Subscribe.
    assert_eq!(ClientMsg::decode(&[0x81, 1, 0x10, 0, 1, 0, 0, 0]), Err(DecodeError::BadField));
    assert_eq!(ClientMsg::decode(&[0x82, 1, 0x01, 0, 1, 0, 0, 0]), Err(DecodeError::BadField));
    assert_eq!(
        ClientMsg::decode(&[0x81, 1, 0x0f, 0, 1, 0, 0, 0]),
        Ok(ClientMsg::SubscribeChannels { instrument: 1, channels: CH_ALL })
    );
    // A full snapshot's reserved word stays reserved; a top-N view's carries its update number.
    let mut full = Vec::new();
    encode_snapshot(&mut full, 3, 10, false, 0, &[], &[]);
    full[28] = 1;
    assert_eq!(ServerMsg::decode(&full), Err(DecodeError::BadField));
    let mut top = Vec::new();
    encode_top(&mut top, 3, 10, 7, true, 0, &[], &[]);
    let ServerMsg::Snapshot(t) = ServerMsg::decode(&top).unwrap() else { panic!() };
    assert_eq!((t.top, t.update, t.halted, t.seq), (true, 7, true, 10));
}

#[test]
fn channel_masks() {
    assert_eq!(effective_channels(0), CH_BOOK);
    assert_eq!(effective_channels(CH_BOOK | CH_TRADES), CH_BOOK);
    assert_eq!(effective_channels(CH_TRADES | CH_CANDLES), CH_TRADES | CH_CANDLES);
    assert_eq!(effective_channels(CH_TOP | CH_TRADES), CH_TOP | CH_TRADES);
}

#[test]
fn levels_crc_matches_a_loaded_book() {
    let mut bk = MdBook::new();
    for p in 1..=15 {
        bk.apply(&up(Side::Buy, p, p as u64, 1));
        bk.apply(&up(Side::Sell, 100 + p, 1, 1));
    }
    let (mut b, mut a) = (Vec::new(), Vec::new());
    bk.depth(Side::Buy, usize::MAX, &mut b);
    bk.depth(Side::Sell, usize::MAX, &mut a);
    assert_eq!(book::levels_crc(&b, &a), bk.crc());
    let mut small = MdBook::new();
    for l in &b[..3] {
        small.apply(&up(Side::Buy, l.price, l.qty, l.orders));
    }
    assert_eq!(book::levels_crc(&b[..3], &[]), small.crc());
}

#[test]
fn sync_detects_gaps_and_bad_checksums() {
    let mut feed = MdBook::new();
    let mut snap = Vec::new();
    encode_snapshot(&mut snap, 1, 5, false, feed.crc(), &[], &[]);
    let mut c = InstrumentSync::new();
    let batch = |first: Seq, ups: &[LevelUpdate], crc: u32| {
        let mut b = Vec::new();
        encode_delta_batch(&mut b, 1, first, 0, crc, ups);
        b
    };
    let u1 = [up(Side::Buy, 10, 1, 1)];
    feed.apply(&u1[0]);
    let b6 = batch(6, &u1, feed.crc());
    assert_eq!(c.apply(&ServerMsg::decode(&b6).unwrap()), Err(SyncError::NoSnapshot));
    assert_eq!(c.apply(&ServerMsg::decode(&snap).unwrap()), Ok(Applied::Snapshot));
    assert_eq!(c.apply(&ServerMsg::decode(&b6).unwrap()), Ok(Applied::Update));
    assert_eq!(c.apply(&ServerMsg::decode(&b6).unwrap()), Ok(Applied::Stale));
    assert_eq!(c.book, feed);
    let b8 = batch(8, &u1, feed.crc());
    assert_eq!(c.apply(&ServerMsg::decode(&b8).unwrap()), Err(SyncError::Gap { expected: 7, got: 8 }));
    assert_eq!(c.seq, None);
    assert_eq!(c.last_good, Some(6));
    let mut c = InstrumentSync::new();
    c.apply(&ServerMsg::decode(&snap).unwrap()).unwrap();
    let bad = batch(6, &u1, feed.crc() ^ 1);
    assert!(matches!(c.apply(&ServerMsg::decode(&bad).unwrap()), Err(SyncError::Checksum { seq: 6, .. })));
}

#[test]
fn crc_covers_ten_levels_each_side() {
    let mut a = MdBook::new();
    for p in 1..=20 {
        a.apply(&up(Side::Buy, p, 1, 1));
        a.apply(&up(Side::Sell, 100 + p, 1, 1));
    }
    let mut b = a.clone();
    b.apply(&up(Side::Buy, 5, 9, 9)); // 16th best bid: not hashed
    assert_eq!(a.crc(), b.crc());
    b.apply(&up(Side::Buy, 15, 9, 9)); // 6th best bid: hashed
    assert_ne!(a.crc(), b.crc());
    assert_eq!(MdBook::new().crc(), 0);
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), ty in 0u8..10, client in any::<bool>()) {
        let mut b = bytes;
        if b.len() >= 2 {
            b[0] = if client { 0x80 | ty } else { ty };
            b[1] = VERSION;
        }
        let _ = ServerMsg::decode(&b);
        let _ = ClientMsg::decode(&b);
    }
}
