//! `tickwire-match`: runs a CSV order file (docs/orderfile.md) through the matching engine
//! in-process and writes the book after every line in LOBSTER's orderbook layout, and optionally
//! every event.
//!
//! ```text
//! tickwire-match --orders FILE --levels N --out FILE [--events FILE] [--config FILE] [--instrument ID]
//! ```

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use tickwire_core::config_file::parse_config;
use tickwire_core::{EngineConfig, InstrumentId};
use tickwire_tools::matchrun::{MatchError, MatchOptions, MatchRun};

#[derive(Parser, Debug)]
#[command(
    name = "tickwire-match",
    version,
    about = "Run a CSV order file through the Tickwire matching engine and write the book after every line (LOBSTER layout)"
)]
struct Cli {
    /// Order file (CSV, see docs/orderfile.md).
    #[arg(long, value_name = "FILE")]
    orders: PathBuf,
    /// Levels per side in each book row.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    levels: u32,
    /// Book output: one LOBSTER orderbook row per data line of the order file, no header.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Events output: every event as one CSV line, with a header.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Engine configuration (TOML, see tools/match.example.toml). Default: one instrument (id 1,
    /// tick 1, lot 1, no price band, no self-trade prevention).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Instrument whose book is written (default: the first configured).
    #[arg(long, value_name = "ID")]
    instrument: Option<InstrumentId>,
}

fn create(path: &Path, what: &str) -> Result<BufWriter<File>, String> {
    File::create(path).map(BufWriter::new).map_err(|e| format!("cannot create {what} {}: {e}", path.display()))
}

fn run(cli: Cli) -> Result<(), String> {
    let cfg = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
            parse_config(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => EngineConfig::single_default(),
    };
    let orders = File::open(&cli.orders)
        .map(BufReader::new)
        .map_err(|e| format!("cannot open orders file {}: {e}", cli.orders.display()))?;
    let same = |p: &Path| std::fs::canonicalize(p).ok() == std::fs::canonicalize(&cli.orders).ok();
    if same(&cli.out) || cli.events.as_deref().is_some_and(same) {
        return Err(format!("an output file is the orders file {}", cli.orders.display()));
    }
    let mut book = create(&cli.out, "book output")?;
    let mut events = match &cli.events {
        Some(p) => Some(create(p, "events output")?),
        None => None,
    };
    let opts = MatchOptions { levels: cli.levels as usize, instrument: cli.instrument };
    let mut runner = MatchRun::new(&cfg, &opts).map_err(|e| e.to_string())?;
    let stderr = io::stderr();
    let mut report = |e: &tickwire_core::orderfile::ParseError| {
        let _ = writeln!(stderr.lock(), "{e}");
    };
    let start = Instant::now();
    let summary = runner
        .run(orders, &mut book, events.as_mut().map(|w| w as &mut dyn Write), &mut report)
        .map_err(|e| match e {
            MatchError::Orders(e) => format!("{}: {e}", cli.orders.display()),
            e => e.to_string(),
        })?;
    let elapsed = start.elapsed();
    eprintln!("{}", summary.line(elapsed));
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("tickwire-match: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
