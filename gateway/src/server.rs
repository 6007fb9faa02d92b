//! The whole server in one process: journal recovery, the rebuild of the sessions' report
//! streams, the core pipeline with the journaler on its inbound ring, the market-data feed, and
//! the order-entry event loop. See `docs/server.md`.
//!
//! [`Server::start`] runs everything on a dedicated thread (the session hub is single-threaded)
//! and returns once the server listens, with what recovery found ([`StartInfo`]). Stop it with
//! [`ServerHandle::stop`] and collect the final state with [`ServerHandle::join`].

use crate::config::ServerConfig;
use crate::net::{bind_listener, EventLoop, LoopStats, StopHandle};
use crate::replay_journal::{rebuild, JournalReplayStore, RebuildStats, RejectLog};
use crate::session::Hub;
use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use tickwire_core::pipeline::{Pipeline, PipelineConfig};
use tickwire_core::Seq;
use tickwire_feed::{Feed, FeedConfig};
use tickwire_journal::{Durability, JournalConfig, JournalWriter, Journaler, RecoverOptions};

/// What the server found and opened at start.
#[derive(Clone, Debug)]
pub struct StartInfo {
    /// Order-entry address.
    pub order_entry: SocketAddr,
    /// Market-data (WebSocket) address, if the feed runs.
    pub feed: Option<SocketAddr>,
    /// Commands recovered from the journal.
    pub recovered_commands: u64,
    /// Last command sequence recovered (0: empty journal).
    pub last_cmd_seq: Seq,
    /// Engine state hash after recovery.
    pub recovered_hash: u64,
    /// Bytes of a torn journal tail cut by recovery.
    pub truncated_bytes: u64,
    /// The rebuild of the report streams.
    pub rebuild: RebuildStats,
    /// Journal durability.
    pub durability: Durability,
}

/// What the server leaves behind after a clean stop.
#[derive(Clone, Debug)]
pub struct FinalReport {
    /// Engine state hash after the last command.
    pub state_hash: u64,
    /// Last command sequence applied (and journaled).
    pub last_cmd_seq: Seq,
    /// Journal durable sequence at close.
    pub durable_seq: Seq,
    /// Event-loop counters.
    pub stats: LoopStats,
    /// The snapshot of the final state written at stop (`<data_dir>/snapshots`), or why not.
    pub snapshot: Result<std::path::PathBuf, String>,
}

/// A failure to start or to stop cleanly.
#[derive(Debug)]
pub struct ServerError(pub String);

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerError {}

fn err<E: fmt::Display>(what: &str) -> impl FnOnce(E) -> ServerError + '_ {
    move |e| ServerError(format!("{what}: {e}"))
}

/// A running server.
pub struct ServerHandle {
    /// What recovery found.
    pub info: StartInfo,
    stop: StopHandle,
    thread: JoinHandle<Result<FinalReport, ServerError>>,
}

impl ServerHandle {
    /// Asks the server to stop: no new connections, every session ended (Logout
    /// `server_shutdown`), commands drained, journal closed.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// A stop handle usable from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Waits for the server thread (after [`ServerHandle::stop`], or a fatal error).
    pub fn join(self) -> Result<FinalReport, ServerError> {
        self.thread.join().map_err(|_| ServerError("server thread panicked".into()))?
    }

    /// Whether the server thread has ended (a fatal error, or after a stop).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// Entry point.
pub struct Server;

impl Server {
    /// Recovers, starts every part, and returns once the order-entry port listens.
    pub fn start(cfg: ServerConfig) -> Result<ServerHandle, ServerError> {
        let (tx, rx) = mpsc::channel::<Result<(StartInfo, StopHandle), ServerError>>();
        let thread = std::thread::Builder::new()
            .name("tw-gateway".into())
            .spawn(move || run(cfg, tx))
            .map_err(err("cannot start the gateway thread"))?;
        match rx.recv() {
            Ok(Ok((info, stop))) => Ok(ServerHandle { info, stop, thread }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => Err(ServerError("the gateway thread ended during start".into())),
            },
        }
    }
}

type Ready = mpsc::Sender<Result<(StartInfo, StopHandle), ServerError>>;

/// Timer slack of the event-loop thread: how late the kernel may end its timed sleeps (Linux's
/// default is 50 µs). Its idle step while a command is in flight used to be a "50 µs" sleep,
/// ~130 µs p50 on the development VM with the default slack and ~80 µs with 1 ns; it is now a
/// park in `epoll_wait` that the engine's or the journaler's doorbell ring ends, so the slack
/// only matters for that park's bound and for session timers. Only this thread, so it is set
/// after the others have started (a thread inherits its creator's slack): the engine and the
/// journaler keep the default, since tighter sleeps in their backoffs made the journal
/// benchmark's ack latency worse on 2 vCPUs (more wake-ups competing with the other busy
/// threads); docs/benchmarks.md.
const LOOP_TIMER_SLACK_NS: u64 = 1_000;

/// Sets the calling thread's timer slack (`PR_SET_TIMERSLACK`, Linux; elsewhere `Unsupported`).
/// Threads it starts afterwards inherit the value, and so do processes it spawns (how
/// `tickwire-bench gateway` runs its diagnostic servers).
pub fn set_timer_slack_ns(ns: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_TIMERSLACK, value) reads only its integer arguments and changes
        // only the calling thread's timer slack; no memory is passed.
        let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns.max(1) as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = ns;
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

fn run(cfg: ServerConfig, ready: Ready) -> Result<FinalReport, ServerError> {
    match start_parts(&cfg) {
        Err(e) => {
            let _ = ready.send(Err(ServerError(e.0.clone())));
            Err(e)
        }
        Ok(parts) => serve(parts, ready),
    }
}

struct Parts {
    info: StartInfo,
    lp: EventLoop,
    journaler: Journaler,
    pipeline: Pipeline,
    feed: Option<Feed>,
    /// The shared-memory ring writer and book-image publisher for external shards, if enabled.
    md_shm: Option<(tickwire_feed::source::MdRingWriter, tickwire_feed::source::ImagePublisher)>,
    log: Rc<RefCell<RejectLog>>,
    snapshot_dir: std::path::PathBuf,
}

fn start_parts(cfg: &ServerConfig) -> Result<Parts, ServerError> {
    // Before recovery, which can take long: a backend this machine refuses fails at once.
    if let Some(f) = &cfg.feed {
        f.backend.available().map_err(|e| ServerError(format!("feed.backend {}: {e}", f.backend)))?;
    }
    std::fs::create_dir_all(&cfg.data_dir).map_err(err(&format!("data directory {}", cfg.data_dir.display())))?;
    let jcfg = JournalConfig {
        durability: cfg.durability,
        segment_bytes: cfg.segment_bytes,
        ..JournalConfig::new(cfg.journal_dir())
    };
    let (writer, rec) = JournalWriter::open_dir(
        jcfg,
        RecoverOptions { truncate_at_corruption: cfg.truncate_at_corruption, ..RecoverOptions::default() },
    ).map_err(err("journal recovery"))?;
    let (log, entries) = RejectLog::open(&cfg.reject_log_path(), cfg.durability != Durability::None)
        .map_err(err(&format!("{}", cfg.reject_log_path().display())))?;
    let log = Rc::new(RefCell::new(log));
    let store = JournalReplayStore::new(cfg.replay_per_key, log.clone());
    let mut scfg = cfg.session.clone();
    // One flush of reports must fit well inside the per-connection output bound (88 bytes each).
    scfg.max_reports_per_flush = scfg.max_reports_per_flush.min(cfg.net.max_outbound_bytes / 4 / 88).max(1);
    let hub = Hub::new(scfg, Box::new(store)).map_err(err("sessions"))?;
    let (engine, rb) = rebuild(&rec, &cfg.engine, &hub, &entries).map_err(err("journal replay"))?;
    if rb.mismatches > 0 {
        eprintln!(
            "tickwire: WARNING: {} gateway rejects got another session sequence than before the restart, \
             or admin follows were refused (keys or accounts changed?); clients may see sequence resets",
            rb.mismatches
        );
    }
    log.borrow_mut().enable();
    let recovered_hash = engine.state_hash();
    let last_cmd_seq = engine.last_cmd_seq();
    let listener = bind_listener(cfg.listen, cfg.net.backlog).map_err(err(&format!("order entry {}", cfg.listen)))?;
    let feed = match &cfg.feed {
        None => None,
        Some(f) => {
            let ids = cfg.engine.instruments.iter().map(|i| i.id).collect();
            let fc = FeedConfig { listen: f.listen, shards: f.shards, shard: f.shard_config(ids) };
            Some(
                Feed::spawn_seeded(fc, tickwire_feed::seed_from_engine(&engine))
                    .map_err(err(&format!("market-data feed {}", f.listen)))?,
            )
        }
    };
    // Durable events for external shard processes: a redacted shm ring and its book image.
    let mut md_writers = None;
    if let Some(path) = &cfg.md_shm {
        let (ring_tx, ring) = tickwire_feed::source::MdRingWriter::spawn(path, cfg.md_shm_capacity, engine.next_event_seq())
            .map_err(err(&format!("market-data ring {}", path.display())))?;
        let (image_tx, image) = tickwire_feed::source::ImagePublisher::spawn_channel(
            &tickwire_feed::source::image_path_for(path),
            &tickwire_feed::seed_from_engine(&engine),
            Default::default(),
        )
        .map_err(err("book image"))?;
        md_writers = Some(((ring_tx, image_tx), (ring, image)));
    }
    let mut pcfg = PipelineConfig::new(cfg.engine.clone());
    pcfg.inbound_side_consumers = 1;
    // The wait profile (docs/server.md): the engine's wait strategy and CPU.
    pcfg.wait = cfg.wait.engine_wait();
    pcfg.engine_cpu = cfg.wait.engine_cpu;
    let (mut pipeline, mut consumers) = Pipeline::start_with_engine(engine, pcfg, 1).map_err(err("pipeline"))?;
    let side = pipeline.take_inbound_side_consumers().pop().ok_or_else(|| ServerError("pipeline: no journal hook".into()))?;
    let journaler = Journaler::spawn_with_idle_spin(writer, side, cfg.wait.journal_spin()).map_err(err("journaler"))?;
    let mut consumer = consumers.pop().ok_or_else(|| ServerError("pipeline: no event consumer".into()))?;
    if !journaler.durable().gate(&mut consumer) {
        return Err(ServerError("journal: cannot gate the event consumer".into()));
    }
    let mut senders = feed.as_ref().map(|f| f.senders().to_vec()).unwrap_or_default();
    let md_shm = md_writers.map(|((ring_tx, image_tx), handles)| {
        senders.push(ring_tx);
        senders.push(image_tx);
        handles
    });
    let mut lp = EventLoop::new(listener, hub, pipeline.producer(), consumer, senders, log.clone(), cfg.net.clone(), last_cmd_seq)
        .map_err(err("event loop"))?;
    lp.set_in_flight_spin(cfg.wait.loop_spin());
    let info = StartInfo {
        order_entry: lp.local_addr(),
        feed: feed.as_ref().map(|f| f.local_addr()),
        recovered_commands: rec.len(),
        last_cmd_seq,
        recovered_hash,
        truncated_bytes: rec.truncated_bytes,
        rebuild: rb,
        durability: cfg.durability,
    };
    Ok(Parts { info, lp, journaler, pipeline, feed, md_shm, log, snapshot_dir: cfg.data_dir.join("snapshots") })
}

fn serve(parts: Parts, ready: Ready) -> Result<FinalReport, ServerError> {
    let Parts { info, mut lp, journaler, pipeline, feed, md_shm, log, snapshot_dir } = parts;
    let _ = ready.send(Ok((info, lp.stop_handle())));
    // Set here, after every other thread was started (threads inherit their creator's slack):
    // the event loop's timed waits (session timers, the bound of its in-flight park) are on the
    // acknowledgement's path.
    if let Err(e) = set_timer_slack_ns(LOOP_TIMER_SLACK_NS) {
        eprintln!("tickwire: could not set the event loop's timer slack: {e}");
    }
    let run = lp.run();
    let stats = lp.stats();
    drop(lp);
    journaler.stop();
    let jst = journaler.join();
    let engine = pipeline.shutdown();
    if let Some(f) = feed {
        if let Err(e) = f.shutdown() {
            eprintln!("tickwire: feed: {e}");
        }
    }
    if let Some((ring, image)) = md_shm {
        ring.stop();
        image.stop();
    }
    log.borrow_mut().sync();
    run.map_err(err("event loop"))?;
    let jst = jst.map_err(err("journal"))?;
    // A snapshot of the final state, for tools and fast inspection (the server itself rebuilds
    // from the whole journal: the report streams need it).
    let snapshot = std::fs::create_dir_all(&snapshot_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            tickwire_journal::snapshot::write_snapshot(&snapshot_dir, &engine.snapshot()).map_err(|e| e.to_string())
        })
        .map(|i| i.path);
    Ok(FinalReport {
        state_hash: engine.state_hash(),
        last_cmd_seq: engine.last_cmd_seq(),
        durable_seq: jst.durable_seq,
        stats,
        snapshot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{WaitMode, DEMO_TRADE_KEY};
    use std::io::{Read, Write};
    use std::time::Duration;
    use tickwire_core::ring::WaitStrategyKind;
    use tickwire_journal::Durability;
    use tickwire_protocol::{ClientMsg, Decoded, ExecType, Logon, NewOrder, ServerMsg, MAX_FRAME};

    fn next_msg(s: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> ServerMsg {
        loop {
            if let Decoded::Frame(m, len) = ServerMsg::decode(buf, MAX_FRAME) {
                buf.drain(..len);
                return m;
            }
            let mut tmp = [0u8; 4096];
            let n = s.read(&mut tmp).expect("read");
            assert!(n > 0, "server closed the connection");
            buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// The `spin` wait profile end to end (journal `sync` and `none`): every order is
    /// acknowledged, whether it comes right after the previous acknowledgement (the loop and the
    /// journaler still spinning) or after a pause longer than the spin (both back to sleeping),
    /// and the server stops cleanly with every command applied.
    #[test]
    fn spin_profile_acknowledges_every_order() {
        for durability in [Durability::Sync, Durability::None] {
            let dir = std::env::temp_dir().join(format!("tickwire-server-spin-{durability}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut cfg = ServerConfig::demo();
            cfg.data_dir = dir.clone();
            cfg.listen = "127.0.0.1:0".parse().unwrap();
            cfg.feed = None;
            cfg.durability = durability;
            cfg.wait.mode = WaitMode::Spin;
            cfg.wait.spin = Duration::from_micros(100);
            // Not a core kept busy for the whole test run: the spins under test are the loop's
            // and the journaler's.
            cfg.wait.engine_wait = Some(WaitStrategyKind::yielding());
            let h = Server::start(cfg).unwrap();
            let mut s = std::net::TcpStream::connect(h.info.order_entry).unwrap();
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let now = crate::net::now_ns();
            let (key, secret) = DEMO_TRADE_KEY;
            let mut out = Vec::new();
            ClientMsg::Logon(Logon::signed(secret.as_bytes(), key, now, now, 0, 30_000, false)).encode_to_vec(&mut out);
            s.write_all(&out).unwrap();
            let mut buf = Vec::new();
            assert!(matches!(next_msg(&mut s, &mut buf), ServerMsg::LogonAccepted(_)));
            let n = 12u64;
            for id in 1..=n {
                let m = ClientMsg::NewOrder(NewOrder {
                    side: 1,
                    order_type: 1,
                    stp: 0,
                    client_order_id: id,
                    account: 1,
                    instrument: 1,
                    price: Some(1_000 + id as i64),
                    qty: 1,
                });
                out.clear();
                m.encode_to_vec(&mut out);
                s.write_all(&out).unwrap();
                loop {
                    match next_msg(&mut s, &mut buf) {
                        ServerMsg::ExecReport(r) if r.client_order_id == id => {
                            assert_eq!(r.exec_type, ExecType::Accepted, "{durability} order {id}");
                            break;
                        }
                        ServerMsg::ExecReport(_) | ServerMsg::Heartbeat(_) => {}
                        m => panic!("{durability} order {id}: unexpected {:?}", m.msg_type()),
                    }
                }
                if id % 3 == 0 {
                    std::thread::sleep(Duration::from_millis(2)); // past the spin budget
                }
            }
            h.stop();
            let r = h.join().unwrap();
            assert_eq!(r.last_cmd_seq, n, "{durability}");
            assert_eq!(r.stats.commands, n);
            assert_eq!(r.durable_seq, n);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
