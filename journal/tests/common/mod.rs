//! Shared test helpers: temp dirs, a deterministic command generator, a small engine config.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tickwire_core::{
    CancelReason, Command, Engine, EngineConfig, InstrumentConfig, OrderType, Seq, Side, StpMode,
};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        // tmpfs when there is one: these tests exercise crash semantics, not the disk, and
        // fsync on a shared disk only makes them slow.
        let shm = Path::new("/dev/shm");
        let base = if std::env::var_os("TICKWIRE_JOURNAL_TEST_DISK").is_none() && shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let p = base.join(format!(
            "tickwire-journal-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Seed from the environment (`TICKWIRE_JOURNAL_SEED`) or the clock; printed for reproduction.
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("TICKWIRE_JOURNAL_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("{test}: seed {s} (rerun with TICKWIRE_JOURNAL_SEED={s})");
    s
}

/// The command with sequence `seq`: a function of `seq` only, so a process that restarts can go
/// on generating the same stream, and a checker can regenerate it. A mix of every kind on two
/// instruments and four accounts, prices near 1000, so the book trades, rests and cancels.
pub fn command_for(seq: Seq) -> Command {
    let mut r = Rng(seq.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let account = 1 + r.below(4) as u32;
    let instrument = 1 + r.below(2) as u32;
    let order_id = 1 + r.below(64);
    let side = if r.below(2) == 0 { Side::Buy } else { Side::Sell };
    let price = 990 + r.below(21) as i64;
    let qty = 1 + r.below(10);
    let c = match r.below(100) {
        0..=54 => Command::new_order(account, instrument, order_id, side, OrderType::LimitGtc, Some(price), qty, None),
        55..=62 => Command::new_order(account, instrument, order_id, side, OrderType::LimitIoc, Some(price), qty, None),
        63..=66 => Command::new_order(account, instrument, order_id, side, OrderType::Market, None, qty, None),
        67..=69 => Command::new_order(
            account,
            instrument,
            order_id,
            side,
            OrderType::LimitGtc,
            Some(price),
            qty,
            Some(StpMode::CancelMaker),
        ),
        70..=84 => Command::cancel(account, instrument, order_id),
        85..=94 => Command::replace(account, instrument, order_id, Some(price), qty),
        95..=97 => Command::mass_cancel(account, Some(instrument), CancelReason::MassCancel),
        98 => Command::set_halted(instrument, true),
        _ => Command::set_halted(instrument, false),
    };
    c.with_seq(seq, 1_700_000_000_000_000_000 + seq * 1_000)
}

/// Commands `from..=to`.
pub fn commands(from: Seq, to: Seq) -> Vec<Command> {
    (from..=to).map(command_for).collect()
}

/// Small engine configuration (cheap to build per test case).
pub fn engine_config() -> EngineConfig {
    EngineConfig {
        instruments: vec![InstrumentConfig::simple(1, "A"), InstrumentConfig::simple(2, "B")],
        orders_max: 4096,
        levels_max: 256,
        accounts_max: 64,
        ..EngineConfig::single_default()
    }
}

/// State hash of an engine fed `cmds`.
pub fn state_hash_of<'a>(cmds: impl IntoIterator<Item = &'a Command>) -> u64 {
    let mut e = Engine::new(&engine_config()).unwrap();
    let mut sink = Vec::new();
    for c in cmds {
        sink.clear();
        e.handle(c, &mut sink);
    }
    e.state_hash()
}
