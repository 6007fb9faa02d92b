//! Candle aggregation: buckets by engine timestamp, OHLCV, closing rules, history, and the
//! Candle channel of the hub.

mod common;

use common::{trade_by, FakeClient};
use tickwire_core::{Event, Side};
use tickwire_feed::hub::candles::{Bar, Candles, Series};
use tickwire_feed::hub::{Hub, HubConfig};
use tickwire_protocol::md::{CandleInterval, ClientMsg, ServerMsg, CH_CANDLES};

const S: u64 = 1_000_000_000;
const T0: u64 = 28_333_333 * 60 * S; // a whole minute (2023-11-14T22:13:00Z)

fn bar(start_ns: u64, o: i64, h: i64, l: i64, c: i64, v: u64, n: u32) -> Bar {
    Bar { start_ns, open: o, high: h, low: l, close: c, volume: v, trades: n }
}

#[test]
fn ohlcv_and_bucket_boundaries() {
    let mut s = Series::new(CandleInterval::Sec1, 100);
    assert_eq!(s.on_trade(T0, 100, 5), None); // exactly on a boundary: that bucket
    assert_eq!(s.on_trade(T0 + 300_000_000, 104, 1), None);
    assert_eq!(s.on_trade(T0 + 600_000_000, 97, 2), None);
    assert_eq!(s.on_trade(T0 + S - 1, 101, 3), None); // last ns of the bucket
    assert_eq!(s.current(), Some(&bar(T0, 100, 104, 97, 101, 11, 4)));
    // The first trade of a later bucket closes it.
    assert_eq!(s.on_trade(T0 + S, 110, 1), Some(bar(T0, 100, 104, 97, 101, 11, 4)));
    // Empty buckets make no candle: the next one starts 3 s later.
    assert_eq!(s.on_trade(T0 + 4 * S + 5, 90, 2), Some(bar(T0 + S, 110, 110, 110, 110, 1, 1)));
    assert_eq!(s.closed().copied().collect::<Vec<_>>().len(), 2);
    assert_eq!(s.current().map(|b| b.start_ns), Some(T0 + 4 * S));
}

#[test]
fn one_minute_and_one_second_together() {
    let mut c = Candles::new(100);
    let mut out = Vec::new();
    for k in 0..130u64 {
        c.on_trade(T0 + k * S / 2, 100 + k as i64, 1, &mut out);
    }
    // 65 s of trades: 64 closed 1 s candles and one 1 min candle.
    let secs = out.iter().filter(|(i, _)| *i == CandleInterval::Sec1).count();
    let mins: Vec<Bar> = out.iter().filter(|(i, _)| *i == CandleInterval::Min1).map(|x| x.1).collect();
    assert_eq!(secs, 64);
    assert_eq!(mins, vec![bar(T0, 100, 219, 100, 219, 120, 120)]);
    // The 1 s candle that ends a minute comes before the 1 min candle.
    let k = out.iter().position(|(i, _)| *i == CandleInterval::Min1).unwrap();
    assert_eq!(out[k - 1], (CandleInterval::Sec1, bar(T0 + 59 * S, 218, 219, 218, 219, 2, 2)));
}

#[test]
fn ticks_close_quiet_buckets_and_late_trades_move_forward() {
    let mut s = Series::new(CandleInterval::Sec1, 100);
    s.on_trade(T0 + 10, 100, 1);
    // Before the end plus grace: still open.
    assert_eq!(s.on_time(T0 + S, 200_000_000), None);
    assert_eq!(s.on_time(T0 + S + 199_999_999, 200_000_000), None);
    assert_eq!(s.on_time(T0 + S + 200_000_000, 200_000_000), Some(bar(T0, 100, 100, 100, 100, 1, 1)));
    assert_eq!(s.on_time(T0 + 10 * S, 0), None, "nothing open");
    // A trade stamped inside the closed bucket is counted in the next one.
    assert_eq!(s.on_trade(T0 + 500, 95, 4), None);
    assert_eq!(s.late_trades, 1);
    assert_eq!(s.current(), Some(&bar(T0 + S, 95, 95, 95, 95, 4, 1)));
    assert_eq!(s.closed().count(), 1, "the closed candle is never changed");
}

#[test]
fn history_is_bounded_and_ranged() {
    let mut s = Series::new(CandleInterval::Sec1, 5);
    for k in 0..20u64 {
        s.on_trade(T0 + k * S, k as i64, 1);
    }
    let kept: Vec<u64> = s.closed().map(|b| (b.start_ns - T0) / S).collect();
    assert_eq!(kept, vec![14, 15, 16, 17, 18]);
    let r: Vec<(u64, bool)> = s.range(T0 + 15 * S, T0 + 17 * S).map(|(b, c)| ((b.start_ns - T0) / S, c)).collect();
    assert_eq!(r, vec![(15, true), (16, true)]);
    let r: Vec<(u64, bool)> = s.range(0, u64::MAX).map(|(b, c)| ((b.start_ns - T0) / S, c)).collect();
    assert_eq!(r.last(), Some(&(19, false)), "the open bucket comes last");
    assert_eq!(r.len(), 6);
    assert_eq!(s.range(T0 + 30 * S, u64::MAX).count(), 0);
}

/// The trades here have a sell aggressor.
fn trade(seq: u64, price: i64, qty: u64, ts_ns: u64) -> Event {
    trade_by(Side::Sell, seq, price, qty, ts_ns)
}

#[test]
fn candle_channel_emits_closed_buckets_in_order() {
    let mut h = Hub::new(HubConfig::new(vec![1, 2]));
    let mut c = FakeClient::connect(&mut h);
    c.send_msg(&mut h, ClientMsg::SubscribeChannels { instrument: 1, channels: CH_CANDLES });
    let trades = [(100, 1, T0 + 1), (105, 2, T0 + S / 2), (99, 1, T0 + S + 1), (101, 3, T0 + 61 * S)];
    for (k, &(p, q, ts)) in trades.iter().enumerate() {
        h.on_events(&[trade(k as u64 + 1, p, q, ts)]);
        h.publish_at(ts);
    }
    let got: Vec<_> = c
        .frames(&mut h)
        .iter()
        .map(|f| match ServerMsg::decode(&f.payload) {
            Ok(ServerMsg::Candle(x)) => {
                (x.seq, x.interval, x.start_ns, x.open, x.high, x.low, x.close, x.volume, x.trades)
            }
            m => panic!("{m:?}"),
        })
        .collect();
    use CandleInterval::*;
    assert_eq!(
        got,
        vec![
            (1, Sec1, T0, 100, 105, 100, 105, 3, 2),
            (2, Sec1, T0 + S, 99, 99, 99, 99, 1, 1),
            (3, Min1, T0, 100, 105, 99, 99, 4, 3),
        ]
    );
    // A heartbeat tick closes the quiet buckets (after the grace delay): 1 s now, 1 min later.
    let grace = h.config().candle_grace_ns;
    h.on_tick_at(false, T0 + 62 * S + grace - 1);
    assert!(c.frames(&mut h).is_empty());
    h.on_tick_at(false, T0 + 62 * S + grace);
    h.on_tick_at(false, T0 + 120 * S + grace);
    let got: Vec<_> = c
        .frames(&mut h)
        .iter()
        .map(|f| match ServerMsg::decode(&f.payload) {
            Ok(ServerMsg::Candle(x)) => (x.seq, x.interval, x.start_ns, x.close),
            m => panic!("{m:?}"),
        })
        .collect();
    assert_eq!(got, vec![(4, Sec1, T0 + 61 * S, 101), (5, Min1, T0 + 60 * S, 101)]);
    // The history has them too (for GET /candles).
    let hist: Vec<u64> = h.candles(1).unwrap().series(Sec1).closed().map(|b| b.start_ns).collect();
    assert_eq!(hist, vec![T0, T0 + S, T0 + 61 * S]);
    assert!(h.candles(2).unwrap().series(Min1).closed().next().is_none());
}
