//! Gateway measurements: closed-loop round trips on one session, and open-loop throughput of N
//! pipelining sessions at a fixed offered rate.

use super::client::{cancel, new_order, Client, BUY, SELL};
use super::raw::{hist, record};
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tickwire_protocol::{ExecType, ServerMsg, EXEC_MAKER};

/// Price of the RTT orders: far below anything else, so they rest alone and never trade.
const RTT_PRICE: i64 = 1_000;
/// Price of the throughput orders: buys and sells at one price, so they trade and the book
/// stays small.
const LOAD_PRICE: i64 = 30_000;

/// Waits for the report of `coid` of type `want` (other frames are skipped).
fn wait_for(c: &mut Client, coid: u64, want: ExecType) -> Result<(), String> {
    loop {
        match c.rd.next(&c.stream)? {
            Some(ServerMsg::ExecReport(r)) if r.client_order_id == coid => {
                if r.exec_type == want {
                    return Ok(());
                }
                if r.exec_type == ExecType::Rejected {
                    return Err(format!("order {coid} rejected (reason {})", r.reason));
                }
            }
            Some(ServerMsg::Logout(l)) => return Err(format!("server logged out (reason {})", l.reason)),
            Some(ServerMsg::SessionReject(r)) => return Err(format!("session reject {:?}", r.reason)),
            Some(_) => {}
            None => return Err("connection closed by the server".into()),
        }
    }
}

/// Round trips on one logged-on session: NewOrder (buy, resting far from the market) → its
/// `accepted` report, recorded in `new_h`; then Cancel → `cancelled`, recorded in `cancel_h`, so
/// the book stays empty. `coid` is the next client order id (advanced).
pub fn rtt_block(
    c: &mut Client,
    n: usize,
    coid: &mut u64,
    new_h: &mut Histogram<u64>,
    cancel_h: &mut Histogram<u64>,
) -> Result<(), String> {
    let account = c.key as u32;
    for _ in 0..n {
        *coid += 1;
        let id = *coid;
        let f = new_order(BUY, id, account, RTT_PRICE, 1);
        let t = Instant::now();
        c.send(&f)?;
        wait_for(c, id, ExecType::Accepted)?;
        record(new_h, t.elapsed());
        let f = cancel(id, account);
        let t = Instant::now();
        c.send(&f)?;
        wait_for(c, id, ExecType::Cancelled)?;
        record(cancel_h, t.elapsed());
    }
    Ok(())
}

/// Result of one offered rate.
pub struct LoadResult {
    /// Orders sent (all sessions).
    pub sent: u64,
    /// Orders acknowledged (accepted or rejected report).
    pub acked: u64,
    /// Of those, rejected.
    pub rejected: u64,
    /// Acknowledged orders / (last acknowledgement − start), orders/s.
    pub achieved: f64,
    /// Ack latency from each order's intended send time, ns.
    pub hist: Histogram<u64>,
    /// Sender lateness: actual write time − intended send time, ns (part of the ack latency).
    pub send_lag: Histogram<u64>,
    /// Session ends other than ours (errors), if any.
    pub errors: Vec<String>,
}

/// Intended times start this long after the sessions are logged on.
const START_DELAY: Duration = Duration::from_millis(20);

/// `sessions` sessions (keys `first_key..`) send `rate` orders/s in all, open loop, for `secs`.
/// Each session alternates buys and sells at one price (they trade: the book stays small) with
/// client order ids `stage << 32 | i`. A sender thread per session writes each order at its
/// intended time (orders due together go in one write), whatever the answers; a receiver thread
/// matches the `accepted` reports. Latency = intended send time → accepted report.
pub fn run_rate(
    addr: SocketAddr,
    first_key: u64,
    sessions: usize,
    rate: f64,
    secs: f64,
    stage: u64,
) -> Result<LoadResult, String> {
    let per_session = ((rate * secs) / sessions as f64).round().max(1.0) as u64;
    let period_ns = (sessions as f64 * 1e9 / rate).max(1.0);
    let mut clients = Vec::new();
    for s in 0..sessions as u64 {
        clients.push(Client::logon(addr, first_key + s)?);
    }
    for c in &clients {
        c.stream.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    }
    let t0 = Instant::now() + START_DELAY;
    let deadline = t0 + Duration::from_secs_f64(secs + 15.0);
    let merged = Mutex::new(hist());
    let lag_merged = Mutex::new(hist());
    let last_ack_ns = AtomicU64::new(0);
    let sent_total = AtomicU64::new(0);
    let errors = Mutex::new(Vec::<String>::new());
    let (mut acked, mut rejected) = (0u64, 0u64);
    let intended = |i: u64| -> u64 { (i as f64 * period_ns) as u64 };
    std::thread::scope(|sc| {
        let mut rx_handles = Vec::new();
        for (si, c) in clients.iter_mut().enumerate() {
            let w = c.stream.try_clone().expect("clone socket");
            let account = c.key as u32;
            // Sessions are spread over the period so their sends do not coincide.
            let offset = (period_ns * si as f64 / sessions as f64) as u64;
            let sent_total = &sent_total;
            let errors = &errors;
            let lag_merged = &lag_merged;
            sc.spawn(move || {
                let mut lag = hist();
                use std::io::Write;
                let mut w = w;
                let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
                let mut i = 0u64;
                while i < per_session {
                    if Instant::now() > deadline {
                        break;
                    }
                    let now = Instant::now().saturating_duration_since(t0).as_nanos() as u64;
                    let due = offset + intended(i);
                    if due > now {
                        let wait = due - now;
                        // No spinning: the cores are shared with the server.
                        if wait > 20_000 {
                            std::thread::sleep(Duration::from_nanos(wait.min(100_000_000)));
                        } else {
                            std::thread::yield_now();
                        }
                        continue;
                    }
                    buf.clear();
                    while i < per_session && buf.len() < 60 * 1024 && offset + intended(i) <= now {
                        let side = if i & 1 == 0 { BUY } else { SELL };
                        lag.saturating_record((now - (offset + intended(i))).max(1_000));
                        buf.extend_from_slice(&new_order(side, (stage << 32) | (i + 1), account, LOAD_PRICE, 1));
                        i += 1;
                    }
                    if let Err(e) = w.write_all(&buf) {
                        errors.lock().expect("lock").push(format!("session {account}: write: {e}"));
                        break;
                    }
                }
                sent_total.fetch_add(i, Ordering::Relaxed);
                lag_merged.lock().expect("lock").add(&lag).expect("same bounds");
            });
            let merged = &merged;
            let last_ack_ns = &last_ack_ns;
            rx_handles.push(sc.spawn(move || {
                let account = c.key as u32;
                let mut h = hist();
                let (mut ok, mut rej) = (0u64, 0u64);
                let mut err = None;
                while ok + rej < per_session && Instant::now() < deadline {
                    match c.rd.next(&c.stream) {
                        Ok(Some(ServerMsg::ExecReport(r))) => {
                            if r.account != account
                                || r.client_order_id >> 32 != stage
                                || r.flags & EXEC_MAKER != 0
                                || !matches!(r.exec_type, ExecType::Accepted | ExecType::Rejected)
                            {
                                continue;
                            }
                            let now = Instant::now().saturating_duration_since(t0).as_nanos() as u64;
                            let i = (r.client_order_id & 0xffff_ffff).saturating_sub(1);
                            let due = offset + intended(i);
                            h.saturating_record(now.saturating_sub(due).max(1_000));
                            last_ack_ns.fetch_max(now, Ordering::Relaxed);
                            if r.exec_type == ExecType::Rejected {
                                rej += 1;
                            } else {
                                ok += 1;
                            }
                        }
                        Ok(Some(ServerMsg::Logout(l))) => {
                            err = Some(format!("session {account}: server logout (reason {})", l.reason));
                            break;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            err = Some(format!("session {account}: closed by the server"));
                            break;
                        }
                        Err(e) if e.contains("timed out") || e.contains("would block") || e.contains("Resource temporarily") => {}
                        Err(e) => {
                            err = Some(format!("session {account}: {e}"));
                            break;
                        }
                    }
                }
                merged.lock().expect("lock").add(&h).expect("same bounds");
                (ok, rej, err)
            }));
        }
        for hnd in rx_handles {
            let (ok, rej, err) = hnd.join().expect("receiver thread");
            acked += ok;
            rejected += rej;
            if let Some(e) = err {
                errors.lock().expect("lock").push(e);
            }
        }
    });
    for c in clients {
        let _ = c.stream.set_read_timeout(Some(Duration::from_secs(5)));
        c.logout();
    }
    let last = last_ack_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let total = acked + rejected;
    Ok(LoadResult {
        sent: sent_total.load(Ordering::Relaxed),
        acked: total,
        rejected,
        achieved: if last > 0.0 { total as f64 / last } else { 0.0 },
        hist: merged.into_inner().expect("lock"),
        send_lag: lag_merged.into_inner().expect("lock"),
        errors: errors.into_inner().expect("lock"),
    })
}
