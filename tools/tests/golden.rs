//! Golden tests: every order file `core/tests/golden/<name>.csv` is run through the engine with
//! `levels = 3` (and `<name>.toml` as configuration if it exists, else the built-in default);
//! the book rows, the events and the malformed-line messages must equal `<name>.book.csv`,
//! `<name>.events.csv` and `<name>.errors.txt` byte for byte (`<name>.errors.txt` exists only
//! for files with malformed lines).
//!
//! `TICKWIRE_BLESS=1 cargo test -p tickwire-tools --test golden` rewrites the expected files from
//! the current engine: read every changed line against docs/matching.md before committing.

use std::fs;
use std::path::{Path, PathBuf};

use tickwire_core::config_file::parse_config;
use tickwire_core::EngineConfig;
use tickwire_tools::matchrun::{run_match, MatchOptions};

/// Levels per side in the golden book files.
pub const GOLDEN_LEVELS: usize = 3;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/golden")
}

fn inputs() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(golden_dir())
        .expect("core/tests/golden exists")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".csv") && !n.ends_with(".book.csv") && !n.ends_with(".events.csv"))
        .map(|n| n.trim_end_matches(".csv").to_string())
        .collect();
    names.sort();
    names
}

struct Outputs {
    book: String,
    events: String,
    errors: String,
}

fn run(name: &str) -> Outputs {
    let dir = golden_dir();
    let cfg_path = dir.join(format!("{name}.toml"));
    let cfg = if cfg_path.exists() {
        parse_config(&fs::read_to_string(&cfg_path).unwrap()).unwrap_or_else(|e| panic!("{name}.toml: {e}"))
    } else {
        EngineConfig::single_default()
    };
    let orders = fs::read(dir.join(format!("{name}.csv"))).unwrap();
    let (mut book, mut events, mut errors) = (Vec::new(), Vec::new(), String::new());
    let opts = MatchOptions { levels: GOLDEN_LEVELS, instrument: None };
    run_match(&cfg, &orders[..], &opts, &mut book, Some(&mut events), &mut |e| {
        errors.push_str(&format!("{e}\n"));
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    Outputs { book: String::from_utf8(book).unwrap(), events: String::from_utf8(events).unwrap(), errors }
}

/// Compares `actual` with the file (or rewrites it when blessing). `optional`: a missing file
/// means empty, and blessing an empty output removes the file.
fn check(file: &str, actual: &str, bless: bool, optional: bool, failures: &mut Vec<String>) {
    let path = golden_dir().join(file);
    if bless {
        if optional && actual.is_empty() {
            let _ = fs::remove_file(&path);
        } else {
            fs::write(&path, actual).unwrap();
        }
        return;
    }
    let expected = match fs::read_to_string(&path) {
        Ok(s) => s,
        Err(_) if optional => String::new(),
        Err(e) => {
            failures.push(format!("{file}: cannot read ({e})"));
            return;
        }
    };
    if expected == actual {
        return;
    }
    let (el, al): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let i = el.iter().zip(&al).position(|(e, a)| e != a).unwrap_or(el.len().min(al.len()));
    failures.push(format!(
        "{file}: first difference at line {}\n  expected: {}\n  actual:   {}\n  ({} expected lines, {} actual)",
        i + 1,
        el.get(i).unwrap_or(&"<end of file>"),
        al.get(i).unwrap_or(&"<end of output>"),
        el.len(),
        al.len()
    ));
}

#[test]
fn golden_files() {
    let bless = std::env::var("TICKWIRE_BLESS").is_ok_and(|v| v == "1");
    let names = inputs();
    assert!(names.len() >= 5, "golden inputs missing: {names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let out = run(name);
        check(&format!("{name}.book.csv"), &out.book, bless, false, &mut failures);
        check(&format!("{name}.events.csv"), &out.events, bless, false, &mut failures);
        check(&format!("{name}.errors.txt"), &out.errors, bless, true, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "golden outputs differ (after checking the change against docs/matching.md, regenerate with \
         TICKWIRE_BLESS=1 cargo test -p tickwire-tools --test golden):\n{}",
        failures.join("\n")
    );
}

/// Book rows correspond to data lines: as many rows as lines that are neither blank, comments
/// nor the header, each with 4 × levels fields.
#[test]
fn one_book_row_per_data_line() {
    for name in inputs() {
        let text = fs::read_to_string(golden_dir().join(format!("{name}.csv"))).unwrap();
        let data_lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).count() - 1;
        let out = run(&name);
        assert_eq!(out.book.lines().count(), data_lines, "{name}");
        for row in out.book.lines() {
            assert_eq!(row.split(',').count(), 4 * GOLDEN_LEVELS, "{name}: {row}");
        }
    }
}

/// Every command's events end with exactly one `last_in_command` event and seqs are gapless.
#[test]
fn events_are_well_formed() {
    for name in inputs() {
        let out = run(&name);
        let mut lines = out.events.lines();
        assert_eq!(lines.next(), Some(tickwire_tools::matchrun::EVENTS_HEADER));
        let mut prev_cmd = 0u64;
        let mut open = false;
        for (i, l) in lines.enumerate() {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 13, "{name}: {l}");
            assert_eq!(f[0].parse::<u64>().unwrap(), i as u64 + 1, "{name}: event seq gapless");
            let cmd: u64 = f[1].parse().unwrap();
            if cmd != prev_cmd {
                assert!(!open, "{name}: command {prev_cmd} had no last_in_command event");
                assert_eq!(cmd, prev_cmd + 1, "{name}: command seqs gapless");
                prev_cmd = cmd;
            }
            open = f[5].parse::<u8>().unwrap() & 1 == 0;
        }
        assert!(!open, "{name}: last command had no last_in_command event");
    }
}
