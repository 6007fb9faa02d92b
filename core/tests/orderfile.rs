//! Order file format: parsing, malformed lines, writer, round trip.

use proptest::prelude::*;
use tickwire_core::orderfile::*;
use tickwire_core::*;

const HEADER: &str = "action,account,instrument,order_id,side,type,price,qty\n";

fn commands(text: &str) -> Vec<Command> {
    parse_str(text)
        .unwrap()
        .into_iter()
        .map(|r| match r {
            Record::Command { cmd, .. } => cmd,
            Record::Malformed(e) => panic!("unexpected error {e}"),
        })
        .collect()
}

/// The single record of `HEADER + line` (line 2), which must be malformed.
fn error_of_with(header: &str, line: &str) -> ParseErrorKind {
    let recs = parse_str(&format!("{header}{line}\n")).unwrap();
    assert_eq!(recs.len(), 1, "{line}");
    match &recs[0] {
        Record::Malformed(e) => {
            assert_eq!(e.line, 2);
            assert!(e.to_string().starts_with("line 2: "), "{e}");
            e.kind.clone()
        }
        Record::Command { cmd, .. } => panic!("{line:?} was accepted as {cmd:?}"),
    }
}

fn error_of(line: &str) -> ParseErrorKind {
    error_of_with(HEADER, line)
}

#[test]
fn example_from_the_spec() {
    let text = format!(
        "{HEADER}new,7,1,1001,buy,limit_gtc,1000500,100\nreplace,7,1,1001,,,1000400,50\ncancel,7,1,1001,,,,\n"
    );
    let cmds = commands(&text);
    assert_eq!(
        cmds,
        vec![
            Command::new_order(7, 1, 1001, Side::Buy, OrderType::LimitGtc, Some(1_000_500), 100, None).with_seq(1, 0),
            Command::replace(7, 1, 1001, Some(1_000_400), 50).with_seq(2, 0),
            Command::cancel(7, 1, 1001).with_seq(3, 0),
        ]
    );
}

#[test]
fn every_action_and_type() {
    let text = format!(
        "{HEADER}\
         new,1,2,3,sell,limit_ioc,10,5\n\
         new,1,2,4,buy,limit_fok,11,6\n\
         new,1,2,5,sell,post_only,12,7\n\
         new,1,2,6,buy,market,,8\n\
         new,1,2,7,sell,market,9,8\n\
         replace,1,2,5,,,,3\n\
         new,1,2,8,buy,limit_gtc,-4,0\n\
         mass_cancel,1,,,,,,\n\
         mass_cancel,1,0,,,,,\n\
         mass_cancel,1,2,,,,,\n"
    );
    let cmds = commands(&text);
    let expect = [
        Command::new_order(1, 2, 3, Side::Sell, OrderType::LimitIoc, Some(10), 5, None),
        Command::new_order(1, 2, 4, Side::Buy, OrderType::LimitFok, Some(11), 6, None),
        Command::new_order(1, 2, 5, Side::Sell, OrderType::PostOnly, Some(12), 7, None),
        Command::new_order(1, 2, 6, Side::Buy, OrderType::Market, None, 8, None),
        Command::new_order(1, 2, 7, Side::Sell, OrderType::Market, Some(9), 8, None),
        Command::replace(1, 2, 5, None, 3),
        // Values the engine rejects (price <= 0, qty 0) are still well-formed lines.
        Command::new_order(1, 2, 8, Side::Buy, OrderType::LimitGtc, Some(-4), 0, None),
        Command::mass_cancel(1, None, CancelReason::MassCancel),
        Command::mass_cancel(1, None, CancelReason::MassCancel),
        Command::mass_cancel(1, Some(2), CancelReason::MassCancel),
    ];
    assert_eq!(cmds.len(), expect.len());
    for (i, (got, want)) in cmds.iter().zip(expect).enumerate() {
        assert_eq!(*got, want.with_seq(i as u64 + 1, 0), "command {}", i + 1);
    }
}

#[test]
fn comments_blank_lines_crlf_spaces_and_line_numbers() {
    let text = "\u{feff}# leading comment\n\n  action , account,instrument,order_id,side,type,price,qty\r\n\
                \t# indented comment\r\n\
                new, 7 ,1,1,buy,limit_gtc,100,10\r\n\
                \n\
                bogus,7,1,1,,,,\n\
                cancel,7,1,1,,,,";
    let recs = parse_str(text).unwrap();
    assert_eq!(recs.len(), 3);
    assert_eq!(
        recs[0],
        Record::Command {
            line: 5,
            cmd: Command::new_order(7, 1, 1, Side::Buy, OrderType::LimitGtc, Some(100), 10, None).with_seq(1, 0)
        }
    );
    assert!(matches!(&recs[1], Record::Malformed(ParseError { line: 7, kind: ParseErrorKind::UnknownAction(a) }) if a == "bogus"));
    // The malformed line takes no seq: seqs stay gapless.
    assert_eq!(recs[2], Record::Command { line: 8, cmd: Command::cancel(7, 1, 1).with_seq(2, 0) });
}

#[test]
fn optional_columns_in_any_order() {
    let text = "ts_ns,qty,price,type,side,order_id,instrument,account,stp,action\n\
                123,10,100,limit_gtc,buy,5,1,7,cancel_both,new\n\
                ,10,100,limit_gtc,sell,6,1,7,,new\n\
                77,,,,,5,1,7,,cancel\n\
                9,,,,,,,7,,mass_cancel\n";
    let cmds = commands(text);
    assert_eq!(
        cmds,
        vec![
            Command::new_order(7, 1, 5, Side::Buy, OrderType::LimitGtc, Some(100), 10, Some(StpMode::CancelBoth))
                .with_seq(1, 123),
            Command::new_order(7, 1, 6, Side::Sell, OrderType::LimitGtc, Some(100), 10, None).with_seq(2, 0),
            Command::cancel(7, 1, 5).with_seq(3, 77),
            Command::mass_cancel(7, None, CancelReason::MassCancel).with_seq(4, 9),
        ]
    );
    for m in StpMode::ALL {
        let line = format!("new,1,1,1,buy,limit_gtc,1,1,{}", m.name());
        let cmds = commands(&format!("action,account,instrument,order_id,side,type,price,qty,stp\n{line}\n"));
        assert_eq!(cmds[0].stp, *m as u8);
    }
}

#[test]
fn malformed_field_count() {
    assert_eq!(error_of("new,7,1,1,buy,limit_gtc,100"), ParseErrorKind::FieldCount { expected: 8, found: 7 });
    assert_eq!(error_of("new,7,1,1,buy,limit_gtc,100,10,"), ParseErrorKind::FieldCount { expected: 8, found: 9 });
    assert_eq!(error_of("cancel"), ParseErrorKind::FieldCount { expected: 8, found: 1 });
}

#[test]
fn malformed_numbers() {
    use Column::*;
    use ParseErrorKind::*;
    assert_eq!(error_of("new,x7,1,1,buy,limit_gtc,100,10"), BadNumber(Account, "x7".into()));
    assert_eq!(error_of("new,7,1,1,buy,limit_gtc,abc,10"), BadNumber(Price, "abc".into()));
    assert_eq!(error_of("new,7,1,1,buy,limit_gtc,100,-10"), BadNumber(Qty, "-10".into()));
    assert_eq!(error_of("new,7,1,1,buy,limit_gtc,+100,10"), BadNumber(Price, "+100".into()));
    assert_eq!(error_of("new,7,1,1,buy,limit_gtc,-,10"), BadNumber(Price, "-".into()));
    assert_eq!(error_of("new,7,1,1,buy,limit_gtc,100,10x"), TrailingGarbage(Qty, "10x".into()));
    assert_eq!(error_of("new,7,1,1,buy,limit_gtc,100.5,10"), TrailingGarbage(Price, "100.5".into()));
    assert_eq!(error_of("new,7,1,1,buy,limit_gtc,1 00,10"), TrailingGarbage(Price, "1 00".into()));
    assert_eq!(error_of("new,7,1,1e3,buy,limit_gtc,100,10"), TrailingGarbage(OrderId, "1e3".into()));
    assert_eq!(error_of("new,4294967296,1,1,buy,limit_gtc,100,10"), OutOfRange(Account, "4294967296".into()));
    assert_eq!(error_of("new,7,4294967296,1,buy,limit_gtc,100,10"), OutOfRange(Instrument, "4294967296".into()));
    assert_eq!(
        error_of("new,7,1,18446744073709551616,buy,limit_gtc,100,10"),
        OutOfRange(OrderId, "18446744073709551616".into())
    );
    assert_eq!(
        error_of("new,7,1,1,buy,limit_gtc,9223372036854775808,10"),
        OutOfRange(Price, "9223372036854775808".into())
    );
    assert_eq!(
        error_of("new,7,1,1,buy,limit_gtc,100,999999999999999999999999999999"),
        OutOfRange(Qty, "999999999999999999999999999999".into())
    );
    assert_eq!(
        error_of("new,7,1,1,buy,limit_gtc,100,999999999999999999999999999999z"),
        TrailingGarbage(Qty, "999999999999999999999999999999z".into())
    );
    // Extremes that fit are accepted.
    let c = commands(&format!(
        "{HEADER}new,4294967295,4294967295,18446744073709551615,buy,limit_gtc,-9223372036854775808,18446744073709551615\n"
    ));
    assert_eq!((c[0].account, c[0].order_id, c[0].price, c[0].qty), (u32::MAX, u64::MAX, i64::MIN, u64::MAX));
    let ts = "action,account,instrument,order_id,side,type,price,qty,ts_ns\n";
    assert_eq!(error_of_with(ts, "cancel,7,1,1,,,,,12ns"), TrailingGarbage(TsNs, "12ns".into()));
}

#[test]
fn malformed_names() {
    use ParseErrorKind::*;
    assert_eq!(error_of("buy,7,1,1,buy,limit_gtc,100,10"), UnknownAction("buy".into()));
    assert_eq!(error_of("NEW,7,1,1,buy,limit_gtc,100,10"), UnknownAction("NEW".into()));
    assert_eq!(error_of("new,7,1,1,bid,limit_gtc,100,10"), UnknownSide("bid".into()));
    assert_eq!(error_of("new,7,1,1,buy,limit,100,10"), UnknownType("limit".into()));
    let stp = "action,account,instrument,order_id,side,type,price,qty,stp\n";
    assert_eq!(error_of_with(stp, "new,7,1,1,buy,limit_gtc,100,10,always"), UnknownStp("always".into()));
    let e = error_of("new,7,1,1,bid,limit_gtc,100,10");
    assert_eq!(e.to_string(), "unknown side \"bid\" (expected buy|sell)");
}

#[test]
fn malformed_missing_fields() {
    use Column::*;
    use ParseErrorKind::*;
    assert_eq!(error_of(",7,1,1,buy,limit_gtc,100,10"), MissingField(Action));
    assert_eq!(error_of("new,,1,1,buy,limit_gtc,100,10"), MissingField(Account));
    assert_eq!(error_of("new,7,,1,buy,limit_gtc,100,10"), MissingField(Instrument));
    assert_eq!(error_of("new,7,1,,buy,limit_gtc,100,10"), MissingField(OrderId));
    assert_eq!(error_of("new,7,1,1,,limit_gtc,100,10"), MissingField(Side));
    assert_eq!(error_of("new,7,1,1,buy,,100,10"), MissingField(Type));
    for t in ["limit_gtc", "limit_ioc", "limit_fok", "post_only"] {
        assert_eq!(error_of(&format!("new,7,1,1,buy,{t},,10")), MissingField(Price), "{t}");
    }
    assert_eq!(error_of("new,7,1,1,buy,market,,"), MissingField(Qty));
    assert_eq!(error_of("cancel,7,,1,,,,"), MissingField(Instrument));
    assert_eq!(error_of("cancel,7,1,,,,,"), MissingField(OrderId));
    assert_eq!(error_of("replace,7,1,1,,,100,"), MissingField(Qty));
    assert_eq!(error_of("mass_cancel,,,,,,,"), MissingField(Account));
    assert_eq!(error_of("new,7,1,1,buy,limit_gtc,,10").to_string(), "missing required field `price`");
}

#[test]
fn malformed_unused_fields() {
    use tickwire_core::orderfile::Action as A;
    use Column::{OrderId, Price, Qty, Side, Stp, Type};
    use ParseErrorKind::*;
    assert_eq!(error_of("cancel,7,1,1,buy,,,"), UnusedField(Side, A::Cancel));
    assert_eq!(error_of("cancel,7,1,1,,,100,"), UnusedField(Price, A::Cancel));
    assert_eq!(error_of("cancel,7,1,1,,,,5"), UnusedField(Qty, A::Cancel));
    assert_eq!(error_of("replace,7,1,1,sell,,100,5"), UnusedField(Side, A::Replace));
    assert_eq!(error_of("replace,7,1,1,,limit_gtc,100,5"), UnusedField(Type, A::Replace));
    assert_eq!(error_of("mass_cancel,7,1,1,,,,"), UnusedField(OrderId, A::MassCancel));
    let stp = "action,account,instrument,order_id,side,type,price,qty,stp\n";
    assert_eq!(error_of_with(stp, "cancel,7,1,1,,,,,none"), UnusedField(Stp, A::Cancel));
}

#[test]
fn invalid_utf8_line_is_malformed_and_parsing_goes_on() {
    let mut input = HEADER.as_bytes().to_vec();
    input.extend_from_slice(b"new,7,1,1,buy,limit_gtc,1\xff0,10\n");
    input.extend_from_slice(b"cancel,7,1,1,,,,\n");
    let recs: Vec<_> = Reader::new(&input[..]).collect::<Result<_, _>>().unwrap();
    assert_eq!(recs[0], Record::Malformed(ParseError { line: 2, kind: ParseErrorKind::InvalidUtf8 }));
    assert_eq!(recs[1], Record::Command { line: 3, cmd: Command::cancel(7, 1, 1).with_seq(1, 0) });
}

#[test]
fn many_errors_in_one_file() {
    let text = format!(
        "{HEADER}new,7,1,1,buy,limit_gtc,100,10\nnew,7,1\nnew,7,1,2,up,limit_gtc,100,10\n\
         new,7,1,3,buy,limit_gtc,100,10\nhello\n"
    );
    let recs = parse_str(&text).unwrap();
    let lines: Vec<(usize, bool)> = recs
        .iter()
        .map(|r| match r {
            Record::Command { line, .. } => (*line, true),
            Record::Malformed(e) => (e.line, false),
        })
        .collect();
    assert_eq!(lines, vec![(2, true), (3, false), (4, false), (5, true), (6, false)]);
}

#[test]
fn header_errors() {
    let kind = |t: &str| parse_str(t).unwrap_err();
    assert_eq!(kind("").kind, HeaderErrorKind::Missing);
    assert_eq!(kind("# only a comment\n\n").kind, HeaderErrorKind::Missing);
    let e = kind("# c\nnew,7,1,1,buy,limit_gtc,100,10\n");
    assert_eq!((e.line, e.kind), (2, HeaderErrorKind::UnknownColumn("new".into())));
    let e = kind("action,account,instrument,order_id,side,type,price,qty,colour\n");
    assert_eq!(e.kind, HeaderErrorKind::UnknownColumn("colour".into()));
    assert!(e.to_string().starts_with("line 1: unknown column \"colour\""), "{e}");
    let e = kind("action,account,instrument,order_id,side,type,price,qty,qty\n");
    assert_eq!(e.kind, HeaderErrorKind::DuplicateColumn(Column::Qty));
    let e = kind("action,account,instrument,order_id,side,type,qty\n");
    assert_eq!(e.kind, HeaderErrorKind::MissingColumn(Column::Price));
    // The reader yields the header error once, then ends.
    let mut r = Reader::new(&b"x\nnew,1\n"[..]);
    assert!(matches!(r.next(), Some(Err(ReadError::Header(_)))));
    assert!(r.next().is_none());
    let mut r = Reader::new(&b""[..]);
    assert!(matches!(r.next(), Some(Err(ReadError::Header(HeaderError { kind: HeaderErrorKind::Missing, .. })))));
    assert!(r.next().is_none());
}

#[test]
fn writer_lines() {
    let w = Writer::new(false, false);
    assert_eq!(w.header(), HEADER);
    let l = |c: Command| w.line(&c).unwrap();
    assert_eq!(
        l(Command::new_order(7, 1, 1001, Side::Buy, OrderType::LimitGtc, Some(1_000_500), 100, None)),
        "new,7,1,1001,buy,limit_gtc,1000500,100\n"
    );
    assert_eq!(l(Command::replace(7, 1, 1001, Some(1_000_400), 50)), "replace,7,1,1001,,,1000400,50\n");
    assert_eq!(l(Command::replace(7, 1, 1001, None, 50)), "replace,7,1,1001,,,,50\n");
    assert_eq!(l(Command::cancel(7, 1, 1001)), "cancel,7,1,1001,,,,\n");
    assert_eq!(l(Command::mass_cancel(7, None, CancelReason::MassCancel)), "mass_cancel,7,,,,,,\n");
    assert_eq!(l(Command::mass_cancel(7, Some(3), CancelReason::MassCancel)), "mass_cancel,7,3,,,,,\n");
    assert_eq!(
        l(Command::new_order(7, 1, 5, Side::Sell, OrderType::Market, None, 9, None)),
        "new,7,1,5,sell,market,,9\n"
    );
    let w2 = Writer::new(true, true);
    assert_eq!(w2.header(), "action,account,instrument,order_id,side,type,price,qty,stp,ts_ns\n");
    let c = Command::new_order(7, 1, 5, Side::Sell, OrderType::PostOnly, Some(3), 9, Some(StpMode::CancelMaker))
        .with_seq(4, 99);
    assert_eq!(w2.line(&c).unwrap(), "new,7,1,5,sell,post_only,3,9,cancel_maker,99\n");
    assert_eq!(w2.line(&Command::cancel(1, 2, 3).with_seq(1, 5)).unwrap(), "cancel,1,2,3,,,,,,5\n");
}

#[test]
fn writer_errors() {
    let w = Writer::new(false, false);
    let mut s = String::new();
    let stp = Command::new_order(7, 1, 5, Side::Sell, OrderType::LimitGtc, Some(3), 9, Some(StpMode::CancelMaker));
    assert_eq!(w.write(&stp, &mut s), Err(WriteError::NoStpColumn));
    assert_eq!(w.write(&Command::set_halted(1, true), &mut s), Err(WriteError::UnsupportedKind(5)));
    assert_eq!(w.write(&Command { kind: 99, ..Command::default() }, &mut s), Err(WriteError::UnsupportedKind(99)));
    let mut bad = Command::new_order(7, 1, 5, Side::Sell, OrderType::LimitGtc, Some(3), 9, None);
    bad.side = 0;
    assert_eq!(w.write(&bad, &mut s), Err(WriteError::InvalidSide(0)));
    bad.side = 1;
    bad.order_type = 6;
    assert_eq!(w.write(&bad, &mut s), Err(WriteError::InvalidOrderType(6)));
    bad.order_type = 1;
    bad.stp = 9;
    assert_eq!(Writer::new(true, false).write(&bad, &mut s), Err(WriteError::InvalidStp(9)));
    let nolimit = Command::new_order(7, 1, 5, Side::Sell, OrderType::LimitIoc, None, 9, None);
    assert_eq!(w.write(&nolimit, &mut s), Err(WriteError::LimitWithoutPrice));
    let cod = Command::mass_cancel(7, None, CancelReason::CancelOnDisconnect);
    assert_eq!(w.write(&cod, &mut s), Err(WriteError::MassCancelReason(5)));
    assert!(s.is_empty(), "nothing written on error");
}

fn side() -> impl Strategy<Value = Side> {
    prop::sample::select(Side::ALL.to_vec())
}

fn stp() -> impl Strategy<Value = Option<StpMode>> {
    prop::option::of(prop::sample::select(StpMode::ALL.to_vec()))
}

/// Valid commands of the four file actions, with arbitrary ts_ns.
fn command() -> impl Strategy<Value = Command> {
    let new = (
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        side(),
        prop::sample::select(OrderType::ALL.to_vec()),
        any::<i64>(),
        any::<bool>(),
        any::<u64>(),
        stp(),
    )
        .prop_map(|(a, i, o, s, t, p, has_p, q, m)| {
            let price = (has_p || t != OrderType::Market).then_some(p);
            Command::new_order(a, i, o, s, t, price, q, m)
        });
    let cancel = (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(a, i, o)| Command::cancel(a, i, o));
    let replace = (any::<u32>(), any::<u32>(), any::<u64>(), prop::option::of(any::<i64>()), any::<u64>())
        .prop_map(|(a, i, o, p, q)| Command::replace(a, i, o, p, q));
    let mass = (any::<u32>(), prop::option::of(1..=u32::MAX))
        .prop_map(|(a, i)| Command::mass_cancel(a, i, CancelReason::MassCancel));
    (prop_oneof![new, cancel, replace, mass], any::<u64>()).prop_map(|(c, ts)| c.with_seq(0, ts))
}

proptest! {
    #[test]
    fn round_trip(cmds in prop::collection::vec(command(), 1..20)) {
        let w = Writer::new(true, true);
        let mut text = w.header();
        for c in &cmds {
            w.write(c, &mut text).unwrap();
        }
        let back = commands(&text);
        prop_assert_eq!(back.len(), cmds.len());
        for (i, (got, want)) in back.iter().zip(&cmds).enumerate() {
            prop_assert_eq!(*got, Command { seq: i as u64 + 1, ..*want });
        }
    }

    #[test]
    fn round_trip_without_optional_columns(c in command()) {
        let w = Writer::new(false, false);
        let c = Command { stp: 0, ..c };
        let text = format!("{}{}", w.header(), w.line(&c).unwrap());
        let back = commands(&text);
        prop_assert_eq!(back, vec![Command { seq: 1, ts_ns: 0, ..c }]);
    }

    #[test]
    fn arbitrary_lines_never_panic(line in "[a-z0-9_,# -]{0,60}") {
        let text = format!("{HEADER}{line}\n");
        let recs = parse_str(&text).unwrap();
        prop_assert!(recs.len() <= 1);
    }
}

/// Every golden order file parses (only `malformed.csv` has malformed lines, one per line of
/// `malformed.errors.txt`), and writing its commands back gives a file that parses to the same
/// commands.
#[test]
fn golden_inputs_parse_and_round_trip() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".csv") || name.ends_with(".book.csv") || name.ends_with(".events.csv") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        let recs = parse_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let errors: Vec<String> = recs
            .iter()
            .filter_map(|r| match r {
                Record::Malformed(e) => Some(format!("{e}\n")),
                Record::Command { .. } => None,
            })
            .collect();
        let expected_errors = std::fs::read_to_string(dir.join(name.replace(".csv", ".errors.txt"))).unwrap_or_default();
        assert_eq!(errors.concat(), expected_errors, "{name}");
        let cmds: Vec<Command> = recs
            .into_iter()
            .filter_map(|r| match r {
                Record::Command { cmd, .. } => Some(cmd),
                Record::Malformed(_) => None,
            })
            .collect();
        let w = Writer::new(true, true);
        let mut out = w.header();
        for c in &cmds {
            w.write(c, &mut out).unwrap();
        }
        assert_eq!(commands(&out), cmds, "{name}");
    }
    assert!(seen >= 5);
}
