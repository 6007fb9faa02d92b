//! Channel selection in Subscribe (sans IO): book (default), conflated top-N, trades, candles.

mod common;

use common::{engine, random_command, trade, FakeClient, Frame, Rng};
use tickwire_core::{Engine, Event, EventKind, Side};
use tickwire_feed::hub::{Hub, HubConfig, SlowPolicy};
use tickwire_protocol::md::sync::{Applied, InstrumentSync};
use tickwire_protocol::md::{ClientMsg, ErrorCode, ServerMsg, CH_BOOK, CH_CANDLES, CH_TOP, CH_TRADES};

fn decode(frames: &[Frame]) -> Vec<ServerMsg<'static>> {
    frames
        .iter()
        .map(|f| {
            assert_eq!(f.opcode, 2);
            let p: &'static [u8] = Box::leak(f.payload.clone().into_boxed_slice());
            ServerMsg::decode(p).expect("decodes")
        })
        .collect()
}

fn sub(h: &mut Hub, instrument: u32, channels: u16) -> FakeClient {
    let mut c = FakeClient::connect(h);
    c.send_msg(h, ClientMsg::SubscribeChannels { instrument, channels });
    c
}

/// A random engine flow (engine timestamps 10 ms apart), published in batches.
struct Flow {
    eng: Engine,
    r: Rng,
    seq: u64,
}

impl Flow {
    fn new(seed: u64) -> Flow {
        Flow { eng: engine(), r: Rng(seed | 1), seq: 0 }
    }

    fn run(&mut self, h: &mut Hub, commands: usize, mut each: impl FnMut(&mut Hub)) {
        let end = self.seq + commands as u64;
        while self.seq < end {
            let mut evs: Vec<Event> = Vec::new();
            for _ in 0..1 + self.r.below(5) {
                self.seq += 1;
                let ts = self.seq * 10_000_000;
                self.eng.handle(&random_command(&mut self.r).with_seq(self.seq, ts), &mut evs);
            }
            h.on_events(&evs);
            h.publish_at(self.seq * 10_000_000);
            each(h);
        }
    }
}

fn flow(h: &mut Hub, seed: u64, commands: usize, each: impl FnMut(&mut Hub)) -> Engine {
    let mut f = Flow::new(seed);
    f.run(h, commands, each);
    f.eng
}

#[test]
fn trades_only_subscriber_gets_trades_on_their_own_sequence() {
    let mut h = Hub::new(HubConfig::new(vec![1, 2]));
    let mut book = FakeClient::connect(&mut h);
    book.send_msg(&mut h, ClientMsg::Subscribe { instrument: 1 });
    let mut trades = sub(&mut h, 1, CH_TRADES);
    let mut both = sub(&mut h, 1, CH_BOOK | CH_TRADES); // trades come once, inside the book stream
    let (mut fb, mut ft, mut f2) = (Vec::new(), Vec::new(), Vec::new());
    let eng = flow(&mut h, 7, 1500, |h| {
        fb.extend(book.frames(h));
        ft.extend(trades.frames(h));
        f2.extend(both.frames(h));
    });
    assert_eq!(fb, f2, "book | trades is the book stream");
    let (mb, mt) = (decode(&fb), decode(&ft));
    // The book subscriber still rebuilds the engine's book.
    let mut sync = InstrumentSync::new();
    for m in &mb {
        assert!(sync.apply(m).is_ok());
    }
    let mut want = Vec::new();
    let mut got = Vec::new();
    eng.depth(1, Side::Buy, usize::MAX, &mut want);
    sync.book.depth(Side::Buy, usize::MAX, &mut got);
    assert_eq!(got, want);
    // Trades only: no snapshot, delta or status; gapless 1..=n; the same trades.
    assert!(mt.iter().all(|m| matches!(m, ServerMsg::Trade(_))), "only trades");
    let book_trades: Vec<_> = mb
        .iter()
        .filter_map(
            |m| if let ServerMsg::Trade(t) = m { Some((t.trade_id, t.price, t.qty, t.aggressor)) } else { None },
        )
        .collect();
    let chan_trades: Vec<_> = mt
        .iter()
        .enumerate()
        .map(|(k, m)| {
            let ServerMsg::Trade(t) = m else { unreachable!() };
            assert_eq!(t.seq, k as u64 + 1, "trade sequence is gapless from 1");
            (t.trade_id, t.price, t.qty, t.aggressor)
        })
        .collect();
    assert!(book_trades.len() > 10, "the flow trades");
    assert_eq!(chan_trades, book_trades);
}

#[test]
fn default_mask_is_the_book_stream_and_masks_add_up() {
    let mut h = Hub::new(HubConfig::new(vec![1, 2]));
    let mut a = FakeClient::connect(&mut h);
    a.send_msg(&mut h, ClientMsg::Subscribe { instrument: 2 });
    let mut b = sub(&mut h, 2, CH_BOOK);
    let (mut fa, mut fbb) = (Vec::new(), Vec::new());
    let mut fl = Flow::new(11);
    fl.run(&mut h, 300, |h| {
        fa.extend(a.frames(h));
        fbb.extend(b.frames(h));
    });
    assert_eq!(fa, fbb, "mask 0 = book channel");

    let errors = |c: &mut FakeClient, h: &mut Hub| -> Vec<u16> {
        decode(&c.frames(h))
            .iter()
            .filter_map(|m| if let ServerMsg::Error(e) = m { Some(e.code) } else { None })
            .collect()
    };
    // Adding nothing new: already_subscribed; trades next to the book add nothing.
    a.send_msg(&mut h, ClientMsg::SubscribeChannels { instrument: 2, channels: CH_TRADES });
    assert_eq!(errors(&mut a, &mut h), vec![ErrorCode::AlreadySubscribed as u16]);
    // Adding the top-N channel sends the current view (no error).
    a.send_msg(&mut h, ClientMsg::SubscribeChannels { instrument: 2, channels: CH_TOP });
    let m = decode(&a.frames(&mut h));
    assert!(matches!(m.as_slice(), [ServerMsg::Snapshot(s)] if s.top), "{m:?}");
    // Undefined channel bits: malformed.
    let mut raw = ClientMsg::Subscribe { instrument: 2 }.to_vec();
    raw[2] = 0x40;
    a.send_raw(&mut h, &common::client_frame(2, &raw));
    assert_eq!(errors(&mut a, &mut h), vec![ErrorCode::Malformed as u16]);
    // Unsubscribe drops every channel.
    a.send_msg(&mut h, ClientMsg::Unsubscribe { instrument: 2 });
    fl.run(&mut h, 100, |_| {});
    let nb = b.frames(&mut h).len();
    assert!(nb > 0, "the other subscriber still receives");
    assert!(a.frames(&mut h).iter().all(|f| matches!(ServerMsg::decode(&f.payload), Ok(ServerMsg::Heartbeat(_)))));
}

#[test]
fn a_trades_subscriber_adding_the_book_gets_each_trade_once() {
    let mut h = Hub::new(HubConfig::new(vec![1, 2]));
    let mut c = sub(&mut h, 1, CH_TRADES);
    let mut fl = Flow::new(5);
    fl.run(&mut h, 200, |_| {});
    c.frames(&mut h);
    c.send_msg(&mut h, ClientMsg::Subscribe { instrument: 1 });
    let mut all = Vec::new();
    fl.run(&mut h, 600, |h| all.extend(c.frames(h)));
    let m = decode(&all);
    let mut sync = InstrumentSync::new();
    for x in &m {
        assert!(sync.apply(x).is_ok(), "no duplicate trade breaks the book sequence");
    }
    assert!(m.iter().any(|x| matches!(x, ServerMsg::Trade(_))));
}

fn delta(seq: u64, side: Side, price: i64, qty: u64) -> Event {
    Event {
        seq,
        kind: EventKind::LevelDelta as u8,
        side: side as u8,
        instrument: 1,
        aux32: if qty == 0 { 0 } else { 1 },
        aux64: seq,
        price,
        qty,
        ..Event::default()
    }
}


/// A top-N view: (update, instrument seq, bids, asks) as (price, qty).
type View = (u32, u64, Vec<(i64, u64)>, Vec<(i64, u64)>);

fn tops(c: &mut FakeClient, h: &mut Hub) -> Vec<View> {
    decode(&c.frames(h))
        .into_iter()
        .filter_map(|m| match m {
            ServerMsg::Snapshot(s) => {
                assert!(s.top);
                // The view's checksum is the checksum of the levels it carries.
                let mut sync = InstrumentSync::new();
                assert_eq!(sync.apply(&m), Ok(Applied::Snapshot));
                let l = |v: tickwire_protocol::md::Levels<'_>| v.iter().map(|u| (u.price, u.qty)).collect();
                Some((s.update, s.seq, l(s.bids), l(s.asks)))
            }
            ServerMsg::Heartbeat(_) => None,
            m => panic!("top-N subscriber got {m:?}"),
        })
        .collect()
}

#[test]
fn top_n_is_conflated_to_one_view_per_interval_with_the_final_state() {
    let mut h = Hub::new(HubConfig::new(vec![1]));
    h.set_top_channel(2, 100);
    let mut c = sub(&mut h, 1, CH_TOP);
    assert_eq!(tops(&mut c, &mut h), vec![(0, 0, vec![], vec![])], "the current (empty) view, update 0");
    let mut seq = 0;
    let mut step = |h: &mut Hub, evs: &[Event], now: u64| {
        let evs: Vec<Event> = evs
            .iter()
            .map(|e| {
                seq += 1;
                Event { seq, ..*e }
            })
            .collect();
        h.on_events(&evs);
        h.publish_at(now);
    };
    // First change: sent at once (nothing sent in the last interval).
    step(&mut h, &[delta(0, Side::Buy, 100, 5), delta(0, Side::Sell, 101, 7)], 1000);
    assert_eq!(tops(&mut c, &mut h), vec![(1, 2, vec![(100, 5)], vec![(101, 7)])]);
    // Three more changes inside the interval: nothing yet, a deadline at 1100.
    step(&mut h, &[delta(0, Side::Buy, 99, 1)], 1010);
    step(&mut h, &[delta(0, Side::Buy, 100, 8)], 1050);
    step(&mut h, &[delta(0, Side::Buy, 98, 3), delta(0, Side::Sell, 102, 4)], 1090);
    assert!(tops(&mut c, &mut h).is_empty());
    assert_eq!(h.next_deadline(), Some(1100));
    h.on_timer(1099);
    assert!(tops(&mut c, &mut h).is_empty());
    h.on_timer(1100);
    // One view, the final state, N = 2 levels, the instrument sequence it reflects.
    assert_eq!(tops(&mut c, &mut h), vec![(2, 6, vec![(100, 8), (99, 1)], vec![(101, 7), (102, 4)])]);
    assert_eq!(h.next_deadline(), None);
    // A change below the top 2 only: no view.
    step(&mut h, &[delta(0, Side::Buy, 98, 9)], 1300);
    h.on_timer(1500);
    assert!(tops(&mut c, &mut h).is_empty());
    // Many changes over several intervals: never two views less than an interval apart.
    let mut sent = Vec::new();
    for k in 0..50u64 {
        let now = 2000 + k * 30;
        step(&mut h, &[delta(0, Side::Sell, 101, 10 + k)], now);
        for v in tops(&mut c, &mut h) {
            sent.push((now, v));
        }
    }
    h.on_timer(10_000);
    for v in tops(&mut c, &mut h) {
        sent.push((10_000, v));
    }
    for w in sent.windows(2) {
        assert!(w[1].0 - w[0].0 >= 100, "views at {} and {}", w[0].0, w[1].0);
        assert_eq!(w[1].1 .0, w[0].1 .0 + 1, "update numbers are gapless");
    }
    let last = &sent.last().unwrap().1;
    assert_eq!(last.3[0], (101, 59), "the final state is sent");
    assert_eq!(last.1, h.book(1).unwrap().1);
}

#[test]
fn sequences_let_a_client_detect_loss_after_conflation() {
    let mut cfg = HubConfig::new(vec![1]);
    cfg.budget_bytes = 600;
    cfg.slow_policy = SlowPolicy::Conflate;
    let mut h = Hub::new(cfg);
    h.set_top_channel(1, 0);
    let mut t = sub(&mut h, 1, CH_TRADES | CH_CANDLES);
    let mut top = sub(&mut h, 1, CH_TOP);
    top.frames(&mut h);
    let mut seq = 0;
    let mut now = 1_000_000_000u64;
    let mut run = |h: &mut Hub, n: usize| {
        for _ in 0..n {
            seq += 1;
            now += 400_000_000; // every other trade opens a new 1 s bucket
            h.on_events(&[Event { seq, ..trade(0, 100 + (seq % 7) as i64, 1, now) }]);
            seq += 1;
            h.on_events(&[Event { seq, ..delta(0, Side::Buy, 90, seq) }]);
            h.publish_at(now);
        }
    };
    // Caught up: every channel is gapless.
    run(&mut h, 5);
    let m = decode(&t.frames(&mut h));
    let trade_seqs: Vec<u64> =
        m.iter().filter_map(|x| if let ServerMsg::Trade(x) = x { Some(x.seq) } else { None }).collect();
    assert_eq!(trade_seqs, vec![1, 2, 3, 4, 5]);
    let candle_seqs: Vec<u64> =
        m.iter().filter_map(|x| if let ServerMsg::Candle(x) = x { Some(x.seq) } else { None }).collect();
    assert!(!candle_seqs.is_empty());
    assert_eq!(candle_seqs, (1..=candle_seqs.len() as u64).collect::<Vec<_>>());
    let mut views = tops(&mut top, &mut h);
    assert_eq!(views.iter().map(|v| v.0).collect::<Vec<_>>(), (1..=5).collect::<Vec<_>>());
    // Stalled past the budget: frames are dropped for both connections.
    run(&mut h, 60);
    assert!(h.stats.conflations >= 2);
    let m1 = decode(&t.frames(&mut h));
    run(&mut h, 3);
    let m2 = decode(&t.frames(&mut h));
    let seqs: Vec<u64> = m
        .iter()
        .chain(&m1)
        .chain(&m2)
        .filter_map(|x| if let ServerMsg::Trade(x) = x { Some(x.seq) } else { None })
        .collect();
    assert!(seqs.windows(2).any(|w| w[1] != w[0] + 1), "the trade sequence shows the loss: {seqs:?}");
    assert_eq!(seqs.last(), Some(&68));
    // The top-N subscriber gets a fresh view after the drain, then later ones: the update number
    // jumps over the views it missed.
    views.extend(tops(&mut top, &mut h));
    run(&mut h, 1);
    views.extend(tops(&mut top, &mut h));
    assert!(views.windows(2).any(|w| w[1].0 > w[0].0 + 1), "{views:?}");
    assert_eq!(views.last().unwrap().1, h.book(1).unwrap().1);
}

#[test]
fn encoded_once_per_channel() {
    let run = |n: usize| -> u64 {
        let mut h = Hub::new(HubConfig::new(vec![1, 2]));
        h.set_top_channel(5, 0);
        let mut cs = Vec::new();
        for _ in 0..n {
            for ch in [CH_BOOK, CH_TOP, CH_TRADES, CH_CANDLES] {
                let mut c = sub(&mut h, 1, ch);
                c.frames(&mut h);
                cs.push(c);
            }
        }
        let before = h.stats.frames_encoded;
        flow(&mut h, 9, 400, |h| {
            for c in cs.iter_mut() {
                c.frames(h);
            }
        });
        h.stats.frames_encoded - before
    };
    assert_eq!(run(1), run(6), "frames encoded do not depend on the number of subscribers");
}

/// Over a real shard: a top-N subscriber ends with the final state of a burst (the shard wakes for
/// the pending view), and a trades + candles subscriber gets no book messages.
#[test]
fn channels_over_a_socket() {
    use std::net::TcpStream;
    use std::time::Duration;
    use tungstenite::Message;
    let mut cfg = tickwire_feed::FeedConfig::new("127.0.0.1:0".parse().unwrap(), vec![1]);
    cfg.shard.top_depth = 1;
    cfg.shard.top_interval = Duration::from_millis(50);
    let feed = tickwire_feed::Feed::spawn(cfg).unwrap();
    let addr = feed.local_addr();
    let connect = |channels: u16| {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (mut ws, _) = tungstenite::client(format!("ws://{addr}/md"), s).unwrap();
        ws.send(Message::Binary(ClientMsg::SubscribeChannels { instrument: 1, channels }.to_vec().into())).unwrap();
        ws
    };
    let mut top = connect(CH_TOP);
    let mut tc = connect(CH_TRADES | CH_CANDLES);
    let read = |ws: &mut tungstenite::WebSocket<TcpStream>| loop {
        if let Message::Binary(b) = ws.read().unwrap() {
            let b: &'static [u8] = Box::leak(b.to_vec().into_boxed_slice());
            let m = ServerMsg::decode(b).unwrap();
            if !matches!(m, ServerMsg::Heartbeat(_)) {
                return m;
            }
        }
    };
    // The first view (empty) answers the subscription: both connections are registered after it.
    assert!(matches!(read(&mut top), ServerMsg::Snapshot(s) if s.top && s.update == 0));
    tc.send(Message::Binary(ClientMsg::Ping { nonce: 1 }.to_vec().into())).unwrap();
    loop {
        if let Message::Binary(b) = tc.read().unwrap() {
            if matches!(ServerMsg::decode(&b), Ok(ServerMsg::Heartbeat(h)) if h.nonce == 1) {
                break;
            }
        }
    }
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        seq
    };
    for q in 1..=20u64 {
        feed.publish(&[Event { seq: next(), ..delta(0, Side::Buy, 100, q) }]);
    }
    feed.publish(&[Event { seq: next(), ..trade(0, 100, 3, 5_000_000_000) }]);
    feed.publish(&[Event { seq: next(), ..trade(0, 101, 1, 6_000_000_000) }]);
    loop {
        let ServerMsg::Snapshot(s) = read(&mut top) else { panic!("top-N only") };
        assert!(s.top);
        if s.bids.iter().next().map(|u| u.qty) == Some(20) {
            assert!(s.seq >= 20, "reflects at least the 20 deltas: {}", s.seq);
            break;
        }
    }
    let m: Vec<_> = (0..3).map(|_| read(&mut tc)).collect();
    assert!(matches!(m[0], ServerMsg::Trade(t) if t.seq == 1 && t.qty == 3), "{m:?}");
    assert!(matches!(m[1], ServerMsg::Trade(t) if t.seq == 2 && t.qty == 1), "{m:?}");
    assert!(
        matches!(m[2], ServerMsg::Candle(c) if c.seq == 1 && c.start_ns == 5_000_000_000 && c.volume == 3),
        "{m:?}"
    );
    feed.shutdown().unwrap();
}
