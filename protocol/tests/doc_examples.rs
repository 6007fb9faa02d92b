//! docs/protocol.md agrees with the encoder: every message's field table and annotated hex
//! example, and every enum table, are generated here from the code and must appear verbatim in the
//! document between `<!-- generated:NAME -->` and `<!-- end:NAME -->`. Each field's value is read
//! back from the encoded bytes at the documented offset and compared with the example's value, so
//! a wrong offset fails here.
//!
//! After changing a message: `TICKWIRE_BLESS=1 cargo test -p tickwire-protocol --test doc_examples`
//! rewrites the generated parts of the document (then review the diff).

use std::fmt::Write as _;
use tickwire_core::{CancelReason, CommandKind, OrderType, RejectReason, Side, StpMode};
use tickwire_protocol::*;

#[derive(Clone, Copy)]
enum Ty {
    U8,
    U16,
    U32,
    U64,
    I64,
    Bytes32,
    Pad(usize),
}

impl Ty {
    fn size(self) -> usize {
        match self {
            Ty::U8 => 1,
            Ty::U16 => 2,
            Ty::U32 => 4,
            Ty::U64 | Ty::I64 => 8,
            Ty::Bytes32 => 32,
            Ty::Pad(n) => n,
        }
    }
    fn name(self) -> String {
        match self {
            Ty::U8 => "u8".into(),
            Ty::U16 => "u16".into(),
            Ty::U32 => "u32".into(),
            Ty::U64 => "u64".into(),
            Ty::I64 => "i64".into(),
            Ty::Bytes32 => "bytes[32]".into(),
            Ty::Pad(n) => format!("zero[{n}]"),
        }
    }
}

struct F {
    name: &'static str,
    ty: Ty,
    /// Expected value (integers; 0 for padding; ignored for bytes).
    value: i128,
    desc: &'static str,
}

fn f(name: &'static str, ty: Ty, value: impl Into<i128>, desc: &'static str) -> F {
    F { name, ty, value: value.into(), desc }
}

fn pad(n: usize) -> F {
    F { name: "reserved", ty: Ty::Pad(n), value: 0, desc: "zero" }
}

fn header(len: usize, ty: MsgType) -> Vec<F> {
    vec![
        f("length", Ty::U16, len as i128, "whole frame length in bytes, header included"),
        f("msg_type", Ty::U8, ty as u8, "message type"),
        f("version", Ty::U8, PROTOCOL_VERSION, "protocol version, 1"),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

/// The generated section of one message: field table, annotated hex, whole frame in one line.
fn section(bytes: &[u8], fields: &[F]) -> String {
    let mut table = String::from("| offset | size | field | type | meaning |\n|---:|---:|---|---|---|\n");
    let mut dump = String::new();
    let mut pyfmt = String::from("<");
    let mut off = 0;
    for fl in fields {
        let n = fl.ty.size();
        let b = &bytes[off..off + n];
        let v: i128 = match fl.ty {
            Ty::U8 => b[0] as i128,
            Ty::U16 => u16::from_le_bytes(b.try_into().unwrap()) as i128,
            Ty::U32 => u32::from_le_bytes(b.try_into().unwrap()) as i128,
            Ty::U64 => u64::from_le_bytes(b.try_into().unwrap()) as i128,
            Ty::I64 => i64::from_le_bytes(b.try_into().unwrap()) as i128,
            Ty::Pad(_) => {
                assert!(b.iter().all(|&x| x == 0), "padding {} not zero", fl.name);
                0
            }
            Ty::Bytes32 => fl.value,
        };
        assert_eq!(v, fl.value, "field {} at offset {off}", fl.name);
        writeln!(table, "| {off} | {n} | `{}` | {} | {} |", fl.name, fl.ty.name(), fl.desc).unwrap();
        pyfmt.push_str(&match fl.ty {
            Ty::U8 => "B".to_string(),
            Ty::U16 => "H".to_string(),
            Ty::U32 => "I".to_string(),
            Ty::U64 => "Q".to_string(),
            Ty::I64 => "q".to_string(),
            Ty::Bytes32 => "32s".to_string(),
            Ty::Pad(n) => format!("{n}x"),
        });
        match fl.ty {
            Ty::Bytes32 => {
                for (i, chunk) in b.chunks(16).enumerate() {
                    let label = if i == 0 { format!("{} (HMAC-SHA256)", fl.name) } else { String::from("…") };
                    writeln!(dump, "{:>3}  {:<47}  {label}", off + 16 * i, hex(chunk)).unwrap();
                }
            }
            Ty::Pad(_) => writeln!(dump, "{off:>3}  {:<47}  reserved", hex(b)).unwrap(),
            _ => writeln!(dump, "{off:>3}  {:<47}  {} = {v}", hex(b), fl.name).unwrap(),
        }
        off += n;
    }
    assert_eq!(off, bytes.len(), "the fields cover the frame exactly");
    let whole: String = bytes.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{table}\nPython: `struct.Struct(\"{pyfmt}\")` ({} bytes, header fields included).\n\n\
         Example:\n\n```text\n{dump}```\n\nAs one hex string: `{whole}`\n",
        bytes.len()
    )
}

fn encoded<M: Message>(m: &M) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode_to_vec(&mut v);
    assert_eq!(v.len(), M::SIZE);
    v
}

fn with_header<M: Message>(m: &M, body: Vec<F>) -> (Vec<u8>, Vec<F>) {
    let mut fields = header(M::SIZE, M::TYPE);
    fields.extend(body);
    (encoded(m), fields)
}

pub const EXAMPLE_SECRET: &[u8] = b"example-secret";
const TS: u64 = 1_700_000_000_123_456_789;

fn sections() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut add = |name, (bytes, fields): (Vec<u8>, Vec<F>)| out.push((name, section(&bytes, &fields)));

    let sig = auth::sign(EXAMPLE_SECRET, 7, TS, 42);
    let logon = Logon {
        heartbeat_ms: 1000,
        key_id: 7,
        timestamp_ns: TS,
        nonce: 42,
        last_seq_seen: 12,
        cancel_on_disconnect: true,
        signature: sig,
    };
    add(
        "logon",
        with_header(
            &logon,
            vec![
                f("heartbeat_ms", Ty::U32, 1000, "heartbeat interval asked for, ms (clamped by the server)"),
                f("key_id", Ty::U64, 7, "API key id"),
                f("timestamp_ns", Ty::U64, TS, "client clock, ns since the Unix epoch"),
                f("nonce", Ty::U64, 42, "single-use per key within the freshness window"),
                f("last_seq_seen", Ty::U64, 12, "highest ExecutionReport `session_seq` processed (0 = none)"),
                f("flags", Ty::U8, 1, "bit 0: cancel on disconnect; other bits zero"),
                pad(7),
                f("signature", Ty::Bytes32, 0, "HMAC-SHA256(secret, key_id ‖ timestamp_ns ‖ nonce as 3 × u64 LE)"),
            ],
        ),
    );
    add(
        "heartbeat",
        with_header(
            &Heartbeat { seq: 12 },
            vec![
                pad(4),
                f("seq", Ty::U64, 12, "server: highest session sequence assigned to the key; client: highest processed"),
            ],
        ),
    );
    add(
        "new_order",
        with_header(
            &NewOrder {
                side: Side::Buy as u8,
                order_type: OrderType::LimitGtc as u8,
                stp: 0,
                client_order_id: 1001,
                account: 10,
                instrument: 1,
                price: Some(10_050),
                qty: 3,
            },
            vec![
                f("side", Ty::U8, 1, "`Side`"),
                f("order_type", Ty::U8, 1, "`OrderType`"),
                f("stp", Ty::U8, 0, "`StpMode`, 0 = the account's default"),
                f("flags", Ty::U8, 1, "bit 0: `price` present; other bits zero"),
                f("client_order_id", Ty::U64, 1001, "unique per account for the trading session"),
                f("account", Ty::U32, 10, "account"),
                f("instrument", Ty::U32, 1, "instrument id"),
                f("price", Ty::I64, 10_050, "limit (or market protection) price; 0 when absent"),
                f("qty", Ty::U64, 3, "quantity"),
            ],
        ),
    );
    add(
        "cancel",
        with_header(
            &Cancel { account: 10, client_order_id: 1001, instrument: 1 },
            vec![
                f("account", Ty::U32, 10, "account"),
                f("client_order_id", Ty::U64, 1001, "the order's client order id"),
                f("instrument", Ty::U32, 1, "the order's instrument"),
                pad(4),
            ],
        ),
    );
    add(
        "replace",
        with_header(
            &Replace { client_order_id: 1001, account: 10, instrument: 1, price: None, qty: 2 },
            vec![
                f("flags", Ty::U8, 0, "bit 0: `price` present (else the price is kept); other bits zero"),
                pad(3),
                f("client_order_id", Ty::U64, 1001, "the order's client order id (kept)"),
                f("account", Ty::U32, 10, "account"),
                f("instrument", Ty::U32, 1, "the order's instrument"),
                f("price", Ty::I64, 0, "new price; 0 when absent"),
                f("qty", Ty::U64, 2, "new open quantity"),
            ],
        ),
    );
    add(
        "mass_cancel",
        with_header(
            &MassCancel { account: 10, instrument: 0 },
            vec![
                f("account", Ty::U32, 10, "account whose resting orders are cancelled"),
                f("instrument", Ty::U32, 0, "instrument id, 0 = all"),
                pad(4),
            ],
        ),
    );
    add(
        "logout",
        with_header(
            &Logout { reason: DisconnectReason::ClientLogout as u8 },
            vec![f("reason", Ty::U8, 1, "`DisconnectReason` (a client sends 1)"), pad(3)],
        ),
    );
    add(
        "logon_accepted",
        with_header(
            &LogonAccepted { heartbeat_ms: 1000, last_seq: 15, replay_from: 13, role: Role::Trade },
            vec![
                f("heartbeat_ms", Ty::U32, 1000, "heartbeat interval in force, ms"),
                f("last_seq", Ty::U64, 15, "highest session sequence assigned to the key (0 = none)"),
                f("replay_from", Ty::U64, 13, "first sequence about to be resent (0 = none)"),
                f("role", Ty::U8, 1, "`Role`"),
                pad(7),
            ],
        ),
    );
    add(
        "logon_rejected",
        with_header(
            &LogonRejected { reason: LogonRejectReason::StaleTimestamp },
            vec![f("reason", Ty::U8, 3, "`LogonRejectReason`"), pad(3)],
        ),
    );
    let er = ExecReport {
        exec_type: ExecType::PartialFill,
        side: Side::Buy as u8,
        reason: 0,
        flags: EXEC_QTYS_KNOWN | EXEC_LAST_IN_COMMAND,
        session_seq: 14,
        engine_seq: 9876,
        client_order_id: 1001,
        account: 10,
        instrument: 1,
        price: 10_040,
        qty: 1,
        leaves_qty: 2,
        cum_qty: 1,
        trade_id: 9876,
        cmd_kind: 0,
        order_type: 0,
    };
    add(
        "execution_report",
        with_header(
            &er,
            vec![
                f("exec_type", Ty::U8, 3, "`ExecType`"),
                f("side", Ty::U8, 1, "`Side` of the order (0 for mass_cancelled; a reject's may be anything the client sent)"),
                f("reason", Ty::U8, 0, "rejected: `RejectReason`; cancelled, decremented, mass_cancelled: `CancelReason`; else 0"),
                f("flags", Ty::U8, 20, "`EXEC_*` bits, see below"),
                f("session_seq", Ty::U64, 14, "per-key session sequence, gapless from 1"),
                f("engine_seq", Ty::U64, 9876, "engine event sequence (0 for a gateway reject)"),
                f("client_order_id", Ty::U64, 1001, "the order's client order id (0 for mass_cancelled)"),
                f("account", Ty::U32, 10, "account"),
                f("instrument", Ty::U32, 1, "instrument id (mass_cancelled: 0 = all)"),
                f("price", Ty::I64, 10_040, "see the table of `exec_type` below"),
                f("qty", Ty::U64, 1, "see the table of `exec_type` below"),
                f("leaves_qty", Ty::U64, 2, "open quantity after this report (with flag 4)"),
                f("cum_qty", Ty::U64, 1, "executed quantity so far (with flag 4)"),
                f("trade_id", Ty::U64, 9876, "fills: trade id; else 0"),
                f("cmd_kind", Ty::U8, 0, "rejected: the command's `CommandKind`; else 0"),
                f("order_type", Ty::U8, 0, "accepted: `OrderType`; else 0"),
                pad(6),
            ],
        ),
    );
    add(
        "session_reject",
        with_header(
            &SessionReject { reason: SessionRejectReason::UnknownType, ref_msg_type: 0x30 },
            vec![
                f("reason", Ty::U8, 3, "`SessionRejectReason`"),
                f("ref_msg_type", Ty::U8, 0x30, "the offending frame's type byte (0 if unread)"),
                pad(2),
            ],
        ),
    );
    out
}

fn enum_table(rows: Vec<(u8, &'static str)>) -> String {
    let mut s = String::from("| value | name |\n|---:|---|\n");
    for (v, n) in rows {
        writeln!(s, "| {v} | `{n}` |").unwrap();
    }
    s
}

macro_rules! rows {
    ($e:ty) => {
        <$e>::ALL.iter().map(|v| (*v as u8, v.name())).collect::<Vec<_>>()
    };
}

fn enum_sections() -> Vec<(&'static str, String)> {
    let msg_types = MsgType::ALL
        .iter()
        .map(|t| (*t as u8, t.name()))
        .collect::<Vec<_>>();
    let mut s = String::from("| value | hex | name |\n|---:|---|---|\n");
    for (v, n) in msg_types {
        writeln!(s, "| {v} | 0x{v:02x} | `{n}` |").unwrap();
    }
    vec![
        ("enum_msg_type", s),
        ("enum_side", enum_table(rows!(Side))),
        ("enum_order_type", enum_table(rows!(OrderType))),
        ("enum_stp_mode", enum_table(rows!(StpMode))),
        ("enum_reject_reason", enum_table(rows!(RejectReason))),
        ("enum_cancel_reason", enum_table(rows!(CancelReason))),
        ("enum_command_kind", enum_table(rows!(CommandKind))),
        ("enum_exec_type", enum_table(rows!(ExecType))),
        ("enum_session_reject_reason", enum_table(rows!(SessionRejectReason))),
        ("enum_logon_reject_reason", enum_table(rows!(LogonRejectReason))),
        ("enum_disconnect_reason", enum_table(rows!(DisconnectReason))),
        ("enum_role", enum_table(rows!(Role))),
    ]
}

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");

/// Replaces the text between the markers of `name`; `None` if the markers are missing.
fn splice(doc: &str, name: &str, body: &str) -> Option<String> {
    let open = format!("<!-- generated:{name} -->\n");
    let close = format!("<!-- end:{name} -->");
    let a = doc.find(&open)? + open.len();
    let b = a + doc[a..].find(&close)?;
    Some(format!("{}{}{}", &doc[..a], body, &doc[b..]))
}

#[test]
fn the_document_matches_the_encoder() {
    let bless = std::env::var_os("TICKWIRE_BLESS").is_some();
    let mut doc = std::fs::read_to_string(DOC).expect("docs/protocol.md");
    let mut stale = Vec::new();
    for (name, body) in sections().into_iter().chain(enum_sections()) {
        let Some(new) = splice(&doc, name, &body) else { panic!("docs/protocol.md lacks the markers of {name}") };
        if new != doc {
            stale.push(name);
            doc = new;
        }
    }
    if bless {
        std::fs::write(DOC, &doc).unwrap();
    } else {
        assert!(
            stale.is_empty(),
            "docs/protocol.md is out of date for {stale:?}; run TICKWIRE_BLESS=1 cargo test -p tickwire-protocol --test doc_examples"
        );
    }
}

#[test]
fn the_documented_logon_signature_verifies() {
    let sig = auth::sign(EXAMPLE_SECRET, 7, TS, 42);
    assert!(auth::verify(EXAMPLE_SECRET, 7, TS, 42, &sig));
    // The documented signed bytes.
    assert_eq!(hex(&auth::signed_bytes(7, TS, 42)), "07 00 00 00 00 00 00 00 15 cd 85 3d fe 9c 97 17 2a 00 00 00 00 00 00 00");
    // The same signature computed independently (Python's hmac module), as quoted in the document.
    let sig_hex: String = sig.iter().map(|x| format!("{x:02x}")).collect();
    assert_eq!(sig_hex, "9f96e0966a5740d20a0dd66930b59383f6e6d620cb54e10bdd6d06180e88abfb");
}
