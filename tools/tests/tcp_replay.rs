//! `tcp-replay` against a real server (the gateway + engine + journal of `tickwire serve`, started
//! in-process on free loopback ports with its data in a temp dir):
//!
//! - the golden `basic.csv` and a generated 10 000-command file through one admin session: no
//!   lost or duplicated reports, and the server's final state hash equals an in-process engine
//!   that ran the same file (the same books: every order, level, quantity);
//! - the generated file through 8 trade sessions at a fixed rate (open loop): no lost or
//!   duplicated reports, every command answered, and the server's final state equals its
//!   journal's replay (`tickwire-journal state-hash`); the sessions interleave, so the order the
//!   engine saw is the journal's, not the file's;
//! - clear errors: unreachable server, malformed file (line number).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command as Proc;
use std::time::Duration;
use tickwire_core::orderfile::{Reader, Record};
use tickwire_core::{CommandKind, Engine, Event};
use tickwire_gateway::config::ServerConfig;
use tickwire_gateway::server::Server;

const REPLAY: &str = env!("CARGO_BIN_EXE_tcp-replay");
const JOURNAL: &str = env!("CARGO_BIN_EXE_tickwire-journal");

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("tickwire-tcp-replay-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const INSTRUMENTS: &str = r#"
[[instruments]]
id = 1
symbol = "A"
tick_size = 1
lot_size = 1
min_qty = 1
max_qty = 1000000

[[instruments]]
id = 2
symbol = "B"
tick_size = 1
lot_size = 1
min_qty = 1
max_qty = 1000000
"#;

/// A server configuration: an admin key 100 (secret "admin"), trade keys 1..=8 (secret "kN",
/// account N), no throttling to speak of, no feed, journal without fsync.
fn server_config(dir: &Path) -> String {
    let mut s = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n{INSTRUMENTS}\n\
         [[keys]]\nid = 100\nrole = \"admin\"\nsecret = \"admin\"\naccounts = []\n",
        dir.join("data").display().to_string()
    );
    for a in 1..=8 {
        s.push_str(&format!("\n[[keys]]\nid = {a}\nrole = \"trade\"\nsecret = \"k{a}\"\naccounts = [{a}]\n"));
    }
    s.push_str(
        "\n[limits]\nrate_per_sec = 10000000\nburst = 10000000\nmax_conn_per_ip_per_sec = 1000\n\
         \n[journal]\ndurability = \"none\"\n\n[feed]\nenabled = false\n",
    );
    s
}

/// An admin-only key file for tcp-replay (one session, file order kept).
fn admin_keys(dir: &Path) -> PathBuf {
    let p = dir.join("admin-keys.toml");
    std::fs::write(&p, "[[keys]]\nid = 100\nrole = \"admin\"\nsecret = \"admin\"\n").unwrap();
    p
}

/// Deterministic order flow: 8 accounts, 2 instruments, limit orders near 1000 (some crossing),
/// cancels and replaces of live orders, IOCs, a few mass cancels; client order ids never reused.
fn generate(n: usize, path: &Path) {
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut next_id = [0u64; 9];
    let mut live: Vec<(u32, u32, u64)> = Vec::new();
    let mut out = String::from("action,account,instrument,order_id,side,type,price,qty,ts_ns\n");
    let mut ts = 1_700_000_000_000_000_000u64;
    for _ in 0..n {
        ts += 1_000 + next() % 100_000;
        let r = next() % 100;
        let acct = 1 + (next() % 8) as u32;
        let inst = 1 + (next() % 2) as u32;
        if r < 15 && !live.is_empty() {
            let (a, i, id) = live.swap_remove((next() % live.len() as u64) as usize);
            out.push_str(&format!("cancel,{a},{i},{id},,,,,{ts}\n"));
        } else if r < 22 && !live.is_empty() {
            let (a, i, id) = live[(next() % live.len() as u64) as usize];
            let price = if next() % 2 == 0 { format!("{}", 990 + next() % 20) } else { String::new() };
            out.push_str(&format!("replace,{a},{i},{id},,,{price},{},{ts}\n", 1 + next() % 40));
        } else if r == 22 {
            out.push_str(&format!("mass_cancel,{acct},{inst},,,,,,{ts}\n"));
            live.retain(|&(a, i, _)| !(a == acct && i == inst));
        } else {
            next_id[acct as usize] += 1;
            let id = next_id[acct as usize];
            let side = if next() % 2 == 0 { "buy" } else { "sell" };
            let off = (next() % 12) as i64;
            let price = if side == "buy" { 998 - off + 4 } else { 1002 + off - 4 };
            let ty = if next() % 10 == 0 { "limit_ioc" } else { "limit_gtc" };
            out.push_str(&format!("new,{acct},{inst},{id},{side},{ty},{price},{},{ts}\n", 1 + next() % 50));
            if ty == "limit_gtc" {
                live.push((acct, inst, id));
            }
        }
    }
    std::fs::write(path, out).unwrap();
}

/// The state hash an engine reaches on `file` in file order, skipping what the gateway refuses
/// itself (a NewOrder reusing a client order id).
fn expected_hash(cfg: &ServerConfig, file: &Path) -> u64 {
    let mut eng = Engine::new(&cfg.engine).unwrap();
    let mut used: HashMap<u32, HashSet<u64>> = HashMap::new();
    let mut evs: Vec<Event> = Vec::new();
    let mut seq = 0;
    for rec in Reader::new(std::io::BufReader::new(std::fs::File::open(file).unwrap())) {
        let Record::Command { cmd, .. } = rec.unwrap() else { panic!("malformed line in {}", file.display()) };
        if cmd.kind == CommandKind::New as u8 && !used.entry(cmd.account).or_default().insert(cmd.order_id) {
            continue;
        }
        seq += 1;
        evs.clear();
        eng.handle(&cmd.with_seq(seq, 0), &mut evs);
    }
    eng.state_hash()
}

struct Run {
    json: String,
    code: i32,
}

fn replay(args: &[&str]) -> Run {
    let out = Proc::new(REPLAY).args(args).arg("--json").output().unwrap();
    let json = String::from_utf8_lossy(&out.stdout).trim().to_string();
    eprintln!("tcp-replay {args:?}: {json}\n{}", String::from_utf8_lossy(&out.stderr));
    Run { json, code: out.status.code().unwrap_or(-1) }
}

fn field(json: &str, name: &str) -> u64 {
    let pat = format!("\"{name}\":");
    let at = json.find(&pat).unwrap_or_else(|| panic!("{name} missing in {json}")) + pat.len();
    json[at..].chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().unwrap()
}

fn assert_clean(r: &Run, commands: u64) {
    assert_eq!(r.code, 0, "exit status: {}", r.json);
    assert_eq!(field(&r.json, "commands"), commands);
    assert_eq!(field(&r.json, "answered"), commands, "{}", r.json);
    assert_eq!(field(&r.json, "lost"), 0, "{}", r.json);
    assert_eq!(field(&r.json, "duplicated"), 0, "{}", r.json);
    assert_eq!(field(&r.json, "unsent"), 0, "{}", r.json);
}

fn golden_basic() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/golden/basic.csv")
}

/// One server per file (client order ids are per trading session).
fn one_session_run(tag: &str, file: &Path, commands: u64, extra: &[&str]) {
    let dir = TempDir::new(tag);
    let cfg = ServerConfig::parse(&server_config(&dir.0)).unwrap();
    let expected = expected_hash(&cfg, file);
    let server = Server::start(cfg).unwrap();
    let addr = server.info.order_entry.to_string();
    let keys = admin_keys(&dir.0);
    let mut args = vec!["--orders", file.to_str().unwrap(), "--to", &addr, "--keys", keys.to_str().unwrap()];
    args.extend_from_slice(extra);
    let r = replay(&args);
    server.stop();
    let fin = server.join().unwrap();
    assert_clean(&r, commands);
    assert_eq!(field(&r.json, "sessions"), 1);
    assert_eq!(
        fin.state_hash, expected,
        "the server's final state differs from the engine run in-process on the same file"
    );
}

#[test]
fn basic_csv_one_session_matches_the_engine() {
    one_session_run("basic", &golden_basic(), 10, &[]);
}

#[test]
fn generated_10k_one_session_matches_the_engine() {
    let dir = TempDir::new("gen1");
    let file = dir.0.join("orders.csv");
    generate(10_000, &file);
    // Recorded pace (ts_ns, about 0.5 s of order flow) sped up 5x.
    one_session_run("gen1run", &file, 10_000, &["--speed", "5"]);
}

#[test]
fn generated_10k_eight_sessions_open_loop_matches_the_journal() {
    let dir = TempDir::new("gen8");
    let file = dir.0.join("orders.csv");
    generate(10_000, &file);
    let text = server_config(&dir.0);
    std::fs::write(dir.0.join("server.toml"), &text).unwrap();
    let cfg = ServerConfig::parse(&text).unwrap();
    let server = Server::start(cfg).unwrap();
    let addr = server.info.order_entry.to_string();
    // The configuration's keys: the trade keys 1..=8 cover every account, so the admin key gets
    // nothing and 8 sessions run.
    let keys = dir.0.join("trade-keys.toml");
    let trade: String = (1..=8).map(|a| format!("[[keys]]\nid = {a}\nrole = \"trade\"\nsecret = \"k{a}\"\naccounts = [{a}]\n")).collect();
    std::fs::write(&keys, trade).unwrap();
    let r = replay(&["--orders", file.to_str().unwrap(), "--to", &addr, "--keys", keys.to_str().unwrap(), "--rate", "50000"]);
    server.stop();
    let fin = server.join().unwrap();
    assert_clean(&r, 10_000);
    assert_eq!(field(&r.json, "sessions"), 8);
    // The journal's replay reaches the server's final state.
    let mcfg = dir.0.join("match.toml");
    std::fs::write(&mcfg, INSTRUMENTS).unwrap();
    let out = Proc::new(JOURNAL)
        .args(["state-hash", dir.0.join("data/journal").to_str().unwrap(), "--config", mcfg.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tickwire-journal: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains(&format!("state_hash {:#018x} ", fin.state_hash)),
        "journal state {text:?} != server final state {:#018x}",
        fin.state_hash
    );
}

#[test]
fn unreachable_server_and_bad_file_are_clear_errors() {
    // A port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Proc::new(REPLAY)
        .args(["--orders", golden_basic().to_str().unwrap(), "--to", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to 127.0.0.1:"), "{err}");

    let dir = TempDir::new("bad");
    let bad = dir.0.join("bad.csv");
    std::fs::write(&bad, "action,account,instrument,order_id,side,type,price,qty\nnew,1,1,1,buy,limit_gtc,100,5\nnew,1,1,2,buy,limit_gtc,100,5x\n").unwrap();
    let out = Proc::new(REPLAY).args(["--orders", bad.to_str().unwrap(), "--to", "127.0.0.1:1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3:"), "{err}");
    std::thread::sleep(Duration::from_millis(1));
}
