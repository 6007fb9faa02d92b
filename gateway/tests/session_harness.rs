//! Test harness (included by the session test files with `#[path]`): a hub with four keys, a real
//! engine behind it, explicit times. Compiled alone it is an empty test crate.
#![allow(dead_code)]

use tickwire_core::{Command, Engine, EngineConfig, Event};
use tickwire_gateway::session::{ApiKey, Effects, Hub, MemoryReplayStore, Session, SessionConfig};
use tickwire_protocol::{auth, ClientMsg, Decoded, ExecReport, Logon, Message, Role, ServerMsg, MAX_FRAME};

pub const T0: u64 = 1_700_000_000_000_000_000;
pub const MS: u64 = 1_000_000;
pub const SEC: u64 = 1_000_000_000;

pub const TRADER: u64 = 1; // trades accounts 10, 11
pub const READER: u64 = 2; // reads account 10
pub const ADMIN: u64 = 3;
pub const OTHER: u64 = 4; // trades account 20

pub fn secret(key: u64) -> Vec<u8> {
    format!("secret-of-key-{key}").into_bytes()
}

pub fn config() -> SessionConfig {
    let key = |id, role, accounts: &[u32]| ApiKey { id, secret: secret(id), role, accounts: accounts.to_vec() };
    SessionConfig {
        keys: vec![
            key(TRADER, Role::Trade, &[10, 11]),
            key(READER, Role::Read, &[10]),
            key(ADMIN, Role::Admin, &[]),
            key(OTHER, Role::Trade, &[20]),
        ],
        logon_window_ns: 5 * SEC,
        logon_timeout_ns: 10 * SEC,
        heartbeat_min_ms: 100,
        heartbeat_max_ms: 30_000,
        rate_per_sec: 10,
        burst: 20,
        throttle_disconnect_after: 5,
        max_frame: MAX_FRAME,
        max_order_ids_per_account: 1000,
        max_reports_per_flush: 4096,
    }
}

pub fn logon(key: u64, ts: u64, nonce: u64, last_seen: u64, cod: bool) -> Logon {
    Logon {
        heartbeat_ms: 1000,
        key_id: key,
        timestamp_ns: ts,
        nonce,
        last_seq_seen: last_seen,
        cancel_on_disconnect: cod,
        signature: auth::sign(&secret(key), key, ts, nonce),
    }
}

pub fn bytes<M: Message>(m: &M) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode_to_vec(&mut v);
    v
}

/// Decodes every frame of `out` (panics on a malformed server frame: that is a bug).
pub fn decode_all(out: &[u8]) -> Vec<ServerMsg> {
    let mut v = Vec::new();
    let mut rest = out;
    while !rest.is_empty() {
        match ServerMsg::decode(rest, MAX_FRAME) {
            Decoded::Frame(m, n) => {
                v.push(m);
                rest = &rest[n..];
            }
            other => panic!("server wrote a bad frame: {other:?}"),
        }
    }
    v
}

pub fn reports(msgs: &[ServerMsg]) -> Vec<ExecReport> {
    msgs.iter()
        .filter_map(|m| match m {
            ServerMsg::ExecReport(r) => Some(*r),
            _ => None,
        })
        .collect()
}

/// A gateway (hub) with a real engine: commands the sessions emit go through the engine and its
/// events come back to every session.
pub struct World {
    pub hub: Hub,
    pub engine: Engine,
    pub next_cmd_seq: u64,
    pub now: u64,
    pub events: Vec<Event>,
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    pub fn new() -> World {
        World::with_config(config())
    }

    pub fn with_config(cfg: SessionConfig) -> World {
        World {
            hub: Hub::new(cfg, Box::new(MemoryReplayStore::new(1000))).unwrap(),
            engine: Engine::new(&EngineConfig {
                orders_max: 4096,
                levels_max: 256,
                accounts_max: 256,
                ..EngineConfig::single_default()
            })
            .unwrap(),
            next_cmd_seq: 1,
            now: T0,
            events: Vec::new(),
        }
    }

    pub fn connect(&self) -> Conn {
        Conn { s: Session::new(self.hub.clone(), self.now), fx: Effects::new() }
    }

    /// Logs on (asserting success) and returns the messages the server sent.
    pub fn logon(&self, c: &mut Conn, key: u64, nonce: u64, last_seen: u64, cod: bool) -> Vec<ServerMsg> {
        let msgs = c.send(&ClientMsg::Logon(logon(key, self.now, nonce, last_seen, cod)), self.now);
        assert!(matches!(msgs.first(), Some(ServerMsg::LogonAccepted(_))), "logon failed: {msgs:?}");
        msgs
    }

    /// Runs the commands the connection emitted through the engine; every event goes to the hub
    /// and to every given connection. Returns the messages each connection was sent.
    pub fn run(&mut self, conns: &mut [&mut Conn]) -> Vec<Vec<ServerMsg>> {
        let mut cmds: Vec<Command> = Vec::new();
        for c in conns.iter_mut() {
            cmds.append(&mut c.fx.commands);
        }
        self.run_commands(cmds, conns)
    }

    pub fn run_commands(&mut self, cmds: Vec<Command>, conns: &mut [&mut Conn]) -> Vec<Vec<ServerMsg>> {
        let mut out = vec![Vec::new(); conns.len()];
        for cmd in cmds {
            let cmd = cmd.with_seq(self.next_cmd_seq, cmd.ts_ns);
            self.next_cmd_seq += 1;
            let mut evs = Vec::new();
            self.engine.handle(&cmd, &mut evs);
            for ev in &evs {
                self.hub.handle_event(ev);
                for (i, c) in conns.iter_mut().enumerate() {
                    c.s.handle_event(ev, self.now, &mut c.fx);
                    out[i].extend(decode_all(&c.fx.out));
                    c.fx.out.clear();
                }
            }
            self.events.extend(evs);
        }
        out
    }
}

pub struct Conn {
    pub s: Session,
    pub fx: Effects,
}

impl Conn {
    /// Sends one client message; returns what the server wrote back (commands stay in `fx`).
    pub fn send(&mut self, m: &ClientMsg, now: u64) -> Vec<ServerMsg> {
        let mut b = Vec::new();
        m.encode_to_vec(&mut b);
        self.send_raw(&b, now)
    }

    pub fn send_raw(&mut self, b: &[u8], now: u64) -> Vec<ServerMsg> {
        self.s.handle_bytes(b, now, &mut self.fx);
        let msgs = decode_all(&self.fx.out);
        self.fx.out.clear();
        msgs
    }

    pub fn poll(&mut self, now: u64) -> (Option<u64>, Vec<ServerMsg>) {
        let next = self.s.poll_timeout(now, &mut self.fx);
        let msgs = decode_all(&self.fx.out);
        self.fx.out.clear();
        (next, msgs)
    }
}
