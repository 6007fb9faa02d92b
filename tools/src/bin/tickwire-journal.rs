//! `tickwire-journal`: look into a Tickwire command journal (docs/journal.md). Read-only: it never
//! changes the journal (a torn tail is reported, not cut).
//!
//! ```text
//! tickwire-journal inspect PATH                       segments, counts, ranges, times, CRC check
//! tickwire-journal dump PATH [--from N] [--to N]      decoded commands, one per line
//! tickwire-journal export PATH --orders FILE [--from N] [--to N]   order CSV (docs/orderfile.md)
//! tickwire-journal state-hash PATH [--config FILE] [--no-snapshot]
//!                                                     newest verified snapshot + replay (or a
//!                                                     replay from the start), print the state hash
//! ```
//!
//! `inspect` of a directory also lists its snapshot files (`snapshot-<seq>.tws`) and checks them.
//!
//! PATH is a journal directory (`inspect` and `dump` also take one segment file). A journal with a
//! bad record before its tail is refused (file and offset named) unless `--up-to-corruption`
//! is given, which reads the commands before the damage.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tickwire_core::config_file::parse_config;
use tickwire_core::orderfile::Writer as CsvWriter;
use tickwire_core::{
    CancelReason, Command, CommandKind, Engine, EngineConfig, OrderType, Seq, Side, StpMode,
};
use tickwire_journal::format::{self, scan_segment, Record, HEADER_LEN, RECORD_LEN};
use tickwire_journal::snapshot::{list_snapshots, read_snapshot};
use tickwire_journal::{list_segments, recover, recover_engine, RecoverOptions, Recovered};

#[derive(Parser, Debug)]
#[command(name = "tickwire-journal", version, about = "Inspect, dump, export and replay a Tickwire command journal")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug)]
struct Source {
    /// Journal directory (inspect and dump: or one segment file).
    path: PathBuf,
    /// Read the commands before a bad record that is not the torn tail, instead of refusing.
    #[arg(long)]
    up_to_corruption: bool,
}

#[derive(Args, Debug, Clone, Copy)]
struct Range {
    /// First sequence.
    #[arg(long, value_name = "SEQ")]
    from: Option<Seq>,
    /// Last sequence (inclusive).
    #[arg(long, value_name = "SEQ")]
    to: Option<Seq>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Segments, record counts, sequence ranges, journal times; verifies every CRC.
    Inspect {
        #[command(flatten)]
        src: Source,
    },
    /// Decoded commands, human readable.
    Dump {
        #[command(flatten)]
        src: Source,
        #[command(flatten)]
        range: Range,
    },
    /// Writes the commands as an order CSV file (columns action,account,instrument,order_id,side,
    /// type,price,qty,stp,ts_ns). Halt/resume commands have no CSV form: skipped and counted.
    Export {
        #[command(flatten)]
        src: Source,
        /// Output CSV file.
        #[arg(long, value_name = "FILE")]
        orders: PathBuf,
        #[command(flatten)]
        range: Range,
    },
    /// Restores the newest snapshot that verifies, replays the journal after it, and prints the
    /// state hash (what the server's recovery would start from).
    StateHash {
        #[command(flatten)]
        src: Source,
        /// Engine configuration (TOML, see tools/match.example.toml). Default: one instrument.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Ignore snapshots: replay the whole journal from an empty engine.
        #[arg(long)]
        no_snapshot: bool,
    },
}

/// `ns` since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ns % 1_000_000_000
    )
}

fn open(src: &Source) -> Result<Recovered, String> {
    let opts = RecoverOptions { read_only: true, truncate_at_corruption: src.up_to_corruption, from_seq: 0 };
    let rec = recover(&src.path, opts).map_err(|e| e.to_string())?;
    if rec.segments.is_empty() {
        return Err(format!("{}: no journal segments (*.twj) in this directory", src.path.display()));
    }
    Ok(rec)
}

fn enum_name<T>(v: u8, from: fn(u8) -> Option<T>, name: fn(T) -> &'static str) -> String {
    from(v).map_or_else(|| format!("?{v}"), |x| name(x).to_string())
}

/// One command, human readable.
fn describe(c: &Command) -> String {
    let price = c.price().map_or_else(|| "none".to_string(), |p| p.to_string());
    match CommandKind::from_u8(c.kind) {
        Some(CommandKind::New) => format!(
            "new account={} instrument={} order_id={} side={} type={} price={price} qty={} stp={}",
            c.account,
            c.instrument,
            c.order_id,
            enum_name(c.side, Side::from_u8, Side::name),
            enum_name(c.order_type, OrderType::from_u8, OrderType::name),
            c.qty,
            if c.stp == 0 { "default".to_string() } else { enum_name(c.stp, StpMode::from_u8, StpMode::name) },
        ),
        Some(CommandKind::Cancel) => {
            format!("cancel account={} instrument={} order_id={}", c.account, c.instrument, c.order_id)
        }
        Some(CommandKind::Replace) => format!(
            "replace account={} instrument={} order_id={} price={} qty={}",
            c.account,
            c.instrument,
            c.order_id,
            if c.price().is_some() { price } else { "keep".into() },
            c.qty
        ),
        Some(CommandKind::MassCancel) => format!(
            "mass_cancel account={} instrument={} reason={}",
            c.account,
            if c.instrument == 0 { "all".to_string() } else { c.instrument.to_string() },
            if c.reason == 0 { "mass_cancel".to_string() } else { enum_name(c.reason, CancelReason::from_u8, CancelReason::name) }
        ),
        Some(CommandKind::Halt) => format!("halt instrument={}", c.instrument),
        Some(CommandKind::Resume) => format!("resume instrument={}", c.instrument),
        None => format!(
            "unknown kind={} account={} instrument={} order_id={} price={} qty={} flags={:#x}",
            c.kind, c.account, c.instrument, c.order_id, c.price, c.qty, c.flags
        ),
    }
}

fn record_line(r: &Record) -> String {
    format!("seq={} journal_time={} ts_ns={} {}", r.seq, utc(r.ts_ns), r.cmd.ts_ns, describe(&r.cmd))
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn scan_line(path: &Path, bytes: &[u8], out: &mut impl Write) -> io::Result<bool> {
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    match scan_segment(bytes) {
        Err(e) => {
            writeln!(out, "{name}: header does not decode: {e} ({} bytes)", bytes.len())?;
            Ok(false)
        }
        Ok(s) => {
            let range = s.last_seq().map_or_else(|| "empty".to_string(), |l| format!("{}..={l}", s.header.first_seq));
            let times = s.ts_range.map_or_else(String::new, |(a, b)| format!("  time {} .. {}", utc(a), utc(b)));
            write!(
                out,
                "{name}: first_seq {} records {} seq {range}  data {} of {} bytes (created {}){times}",
                s.header.first_seq,
                s.records,
                s.data_end,
                bytes.len(),
                utc(s.header.created_ns),
            )?;
            match (s.stop, s.valid_after) {
                _ if s.is_clean() => writeln!(out, "  CRC ok")?,
                (Some(stop), None) => writeln!(
                    out,
                    "  CRC ok up to offset {}; then {} ({} written bytes after the last whole record)",
                    stop.offset, stop.error, s.garbage_bytes
                )?,
                (Some(stop), Some(v)) => writeln!(
                    out,
                    "  DAMAGED at offset {}: {}; a valid record follows at offset {v}",
                    stop.offset, stop.error
                )?,
                (None, _) => writeln!(out)?,
            }
            Ok(s.is_clean())
        }
    }
}

fn inspect(src: &Source) -> Result<(), String> {
    let out = &mut io::stdout().lock();
    let w = |e: io::Error| e.to_string();
    if src.path.is_file() {
        let bytes = read_file(&src.path)?;
        if let Err(e) = format::SegmentHeader::decode(&bytes) {
            if matches!(e, format::DecodeError::BadMagic | format::DecodeError::BadVersion { .. }) {
                return Err(format!("{}: not a tickwire journal segment: {e}", src.path.display()));
            }
        }
        let clean = scan_line(&src.path, &bytes, out).map_err(w)?;
        return if clean { Ok(()) } else { Err("the segment is not clean (see above)".into()) };
    }
    let files = list_segments(&src.path).map_err(|e| e.to_string())?;
    if files.is_empty() {
        return Err(format!("{}: no journal segments (*.twj) in this directory", src.path.display()));
    }
    writeln!(out, "journal {}: {} segment file(s), {HEADER_LEN}-byte headers, {RECORD_LEN}-byte records", src.path.display(), files.len())
        .map_err(w)?;
    for (_, path) in &files {
        let bytes = read_file(path)?;
        scan_line(path, &bytes, out).map_err(w)?;
    }
    let opts = RecoverOptions { read_only: true, truncate_at_corruption: src.up_to_corruption, from_seq: 0 };
    let snaps = list_snapshots(&src.path).map_err(|e| e.to_string())?;
    let first_seq = files.first().map_or(1, |f| f.0);
    for (_, path) in &snaps {
        let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        match read_snapshot(path) {
            Ok((h, snap)) => writeln!(
                out,
                "{name}: snapshot of sequences ..={} ({} orders, {} books, {} bytes, created {}), state_hash {:#018x}, verifies{}",
                h.last_cmd_seq,
                snap.orders.len(),
                snap.books.len(),
                h.payload_len + 64,
                utc(h.created_ns),
                h.state_hash,
                if h.last_cmd_seq + 1 < first_seq { "; UNUSABLE: the journal starts after it" } else { "" }
            )
            .map_err(w)?,
            Err(e) => writeln!(out, "{name}: snapshot DAMAGED: {e} (recovery skips it)").map_err(w)?,
        }
    }
    match recover(&src.path, opts) {
        Ok(rec) => {
            writeln!(
                out,
                "verdict: {} command(s), sequences {}..={}; recovery would drop {} byte(s){}",
                rec.len(),
                rec.first_seq,
                rec.last_seq,
                rec.truncated_bytes,
                if rec.notes.is_empty() { "" } else { " (see notes above)" }
            )
            .map_err(w)?;
            Ok(())
        }
        Err(e) => Err(format!("verdict: recovery would refuse this journal: {e}")),
    }
}

fn range_of(rec: &Recovered, r: Range) -> Result<(Seq, Seq), String> {
    let from = r.from.unwrap_or(rec.first_seq).max(rec.first_seq);
    let to = r.to.unwrap_or(rec.last_seq);
    if from > to && !rec.is_empty() && r.from.is_some() && r.to.is_some() {
        return Err(format!("--from {from} is after --to {to}"));
    }
    Ok((from, to))
}

fn dump(src: &Source, range: Range) -> Result<(), String> {
    let out = &mut BufWriter::new(io::stdout().lock());
    let w = |e: io::Error| e.to_string();
    if src.path.is_file() {
        let bytes = read_file(&src.path)?;
        let s = scan_segment(&bytes).map_err(|e| format!("{}: {e}", src.path.display()))?;
        for i in 0..s.records as usize {
            let at = HEADER_LEN + i * RECORD_LEN;
            let r = format::decode_record(&bytes[at..]).map_err(|e| e.to_string())?;
            if range.from.is_some_and(|f| r.seq < f) || range.to.is_some_and(|t| r.seq > t) {
                continue;
            }
            writeln!(out, "{}", record_line(&r)).map_err(w)?;
        }
        if !s.is_clean() {
            eprintln!("tickwire-journal: {}: the segment has damaged bytes after offset {}", src.path.display(), s.data_end);
        }
        return out.flush().map_err(w);
    }
    let rec = open(src)?;
    let (from, to) = range_of(&rec, range)?;
    for r in rec.records_range(from, to) {
        let r = r.map_err(|e| e.to_string())?;
        writeln!(out, "{}", record_line(&r)).map_err(w)?;
    }
    out.flush().map_err(w)
}

fn export(src: &Source, orders: &Path, range: Range) -> Result<(), String> {
    let rec = open(src)?;
    let (from, to) = range_of(&rec, range)?;
    let file = File::create(orders).map_err(|e| format!("cannot create {}: {e}", orders.display()))?;
    let mut out = BufWriter::new(file);
    let w = |e: io::Error| format!("{}: {e}", orders.display());
    let csv = CsvWriter::new(true, true);
    out.write_all(csv.header().as_bytes()).map_err(w)?;
    let (mut written, mut skipped) = (0u64, Vec::new());
    let mut line = String::new();
    for r in rec.records_range(from, to) {
        let r = r.map_err(|e| e.to_string())?;
        line.clear();
        match csv.write(&r.cmd, &mut line) {
            Ok(()) => {
                out.write_all(line.as_bytes()).map_err(w)?;
                written += 1;
            }
            Err(e) => skipped.push((r.seq, e.to_string())),
        }
    }
    out.flush().map_err(w)?;
    eprintln!("tickwire-journal: exported {written} command(s) to {}", orders.display());
    if !skipped.is_empty() {
        eprintln!(
            "tickwire-journal: skipped {} command(s) with no order-file form (replaying the CSV will not match the journal), first: seq {}: {}",
            skipped.len(),
            skipped[0].0,
            skipped[0].1
        );
    }
    Ok(())
}

fn state_hash(src: &Source, config: Option<&Path>, no_snapshot: bool) -> Result<(), String> {
    let cfg = match config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
            parse_config(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => EngineConfig::single_default(),
    };
    if !no_snapshot {
        let opts = RecoverOptions { read_only: true, truncate_at_corruption: src.up_to_corruption, from_seq: 0 };
        let (engine, rep) = recover_engine(&src.path, &cfg, opts).map_err(|e| e.to_string())?;
        let from = match &rep.snapshot {
            Some((p, s)) => format!("snapshot {} (sequence {s}) + ", p.display()),
            None => String::new(),
        };
        println!(
            "state_hash {:#018x} after {from}{} replayed command(s), last sequence {}",
            engine.state_hash(),
            rep.replayed,
            engine.last_cmd_seq()
        );
        return Ok(());
    }
    let rec = open(src)?;
    if rec.first_seq > 1 {
        return Err(format!(
            "the journal starts at sequence {} (earlier segments removed after a snapshot); replaying it from an empty engine would not give the state",
            rec.first_seq
        ));
    }
    let mut engine = Engine::new(&cfg).map_err(|e| e.to_string())?;
    let mut sink = Vec::new();
    let mut n = 0u64;
    for c in rec.commands() {
        sink.clear();
        engine.handle(&c.map_err(|e| e.to_string())?, &mut sink);
        n += 1;
    }
    println!("state_hash {:#018x} after {n} command(s), last sequence {}", engine.state_hash(), rec.last_seq);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Inspect { src } => inspect(src),
        Cmd::Dump { src, range } => dump(src, *range),
        Cmd::Export { src, orders, range } => export(src, orders, *range),
        Cmd::StateHash { src, config, no_snapshot } => state_hash(src, config.as_deref(), *no_snapshot),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("tickwire-journal: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
