//! Baselines measured in the same run: a raw TCP ping-pong between two plain threads (40-byte
//! request, 88-byte reply, `TCP_NODELAY`, blocking reads on both sides) and `write` +
//! `fdatasync` of one 88-byte record in the server's directory.

use hdrhistogram::Histogram;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// NewOrder size.
pub const REQ: usize = 40;
/// ExecutionReport size.
pub const REP: usize = 88;

/// A latency histogram in ns (1 µs .. 100 s, 3 significant digits).
pub fn hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1_000, 100_000_000_000, 3).expect("histogram bounds")
}

/// Records a duration (clamped into the histogram's range).
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_nanos() as u64).max(1_000));
}

/// A connected pair: the echo thread answers each 40-byte request with 88 bytes.
pub struct RawPair {
    client: Option<TcpStream>,
    echo: Option<JoinHandle<()>>,
}

impl RawPair {
    /// Binds a free loopback port, connects, starts the echo thread.
    pub fn start() -> Result<RawPair, String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("raw baseline: bind: {e}"))?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        let echo = std::thread::Builder::new()
            .name("raw-echo".into())
            .spawn(move || {
                let Ok((mut s, _)) = l.accept() else { return };
                let _ = s.set_nodelay(true);
                let mut req = [0u8; REQ];
                let rep = [0x43u8; REP];
                while s.read_exact(&mut req).is_ok() {
                    if s.write_all(&rep).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        let c = TcpStream::connect(addr).map_err(|e| format!("raw baseline: connect: {e}"))?;
        c.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(RawPair { client: Some(c), echo: Some(echo) })
    }

    /// `n` round trips, each recorded.
    pub fn block(&mut self, n: usize, h: &mut Histogram<u64>) -> Result<(), String> {
        let c = self.client.as_mut().expect("open");
        let req = [0x03u8; REQ];
        let mut rep = [0u8; REP];
        for _ in 0..n {
            let t = Instant::now();
            c.write_all(&req).map_err(|e| format!("raw write: {e}"))?;
            c.read_exact(&mut rep).map_err(|e| format!("raw read: {e}"))?;
            record(h, t.elapsed());
        }
        Ok(())
    }
}

impl Drop for RawPair {
    fn drop(&mut self) {
        drop(self.client.take());
        if let Some(j) = self.echo.take() {
            let _ = j.join();
        }
    }
}

/// One 88-byte record written sequentially into a zero-filled (preallocated, synced) file, then
/// `fdatasync`; the time of write + `fdatasync` is recorded.
pub struct SyncFile {
    f: File,
    path: PathBuf,
    off: u64,
    len: u64,
}

impl SyncFile {
    /// A zero-filled file of 8 MiB in `dir`.
    pub fn new(dir: &Path) -> Result<SyncFile, String> {
        let path = dir.join("gateway-bench-fdatasync.bin");
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let len = 8u64 << 20;
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..(len >> 20) {
            f.write_all(&chunk).map_err(|e| e.to_string())?;
        }
        f.sync_all().map_err(|e| e.to_string())?;
        Ok(SyncFile { f, path, off: 0, len })
    }

    /// `n` write + `fdatasync`, each recorded.
    pub fn block(&mut self, n: usize, h: &mut Histogram<u64>) -> Result<(), String> {
        let rec = [0x5au8; REP];
        for _ in 0..n {
            if self.off + REP as u64 > self.len {
                self.off = 0;
            }
            let t = Instant::now();
            self.f.write_all_at(&rec, self.off).map_err(|e| format!("write: {e}"))?;
            self.f.sync_data().map_err(|e| format!("fdatasync: {e}"))?;
            record(h, t.elapsed());
            self.off += REP as u64;
        }
        Ok(())
    }
}

impl Drop for SyncFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What `std::thread::sleep(50 µs)` actually takes here (the event loop's idle step while a
/// command is in flight), on a fresh thread with the default timer slack or with
/// `timer_slack_ns`: a diagnostic for the findings, not a baseline.
pub fn sleep_50us(n: usize, timer_slack_ns: Option<u64>) -> Histogram<u64> {
    std::thread::scope(|sc| {
        sc.spawn(|| {
            if let Some(ns) = timer_slack_ns {
                // SAFETY: PR_SET_TIMERSLACK only sets this thread's timer slack; no pointers.
                unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0) };
            }
            let mut h = hist();
            for _ in 0..n {
                let t = Instant::now();
                std::thread::sleep(Duration::from_micros(50));
                record(&mut h, t.elapsed());
            }
            h
        })
        .join()
        .expect("sleep thread")
    })
}
