#!/usr/bin/env python3
"""Minimal Tickwire order-entry client, written from docs/protocol.md alone (stdlib only).

Logs on, sends one NewOrder, prints every server message until the reports stop, logs out.

    python3 tools/python/client.py                       # demo key 1, buy 5 BTC-USD @ 30000
    python3 tools/python/client.py --port 9001 --side sell --qty 2 --price 29990 --order-type ioc
    python3 tools/python/client.py --key 7 --secret my-secret --account 7

Exit status: 0 when the order got at least one ExecutionReport, 2 when the logon was refused or
the server ended the session, 1 on connection errors.
"""

import argparse
import hashlib
import hmac
import os
import socket
import struct
import sys
import time

VERSION = 1
MAX_FRAME = 256

# Message types.
LOGON, HEARTBEAT, NEW_ORDER, CANCEL, REPLACE, MASS_CANCEL, LOGOUT = 1, 2, 3, 4, 5, 6, 7
LOGON_ACCEPTED, LOGON_REJECTED, EXECUTION_REPORT, SESSION_REJECT = 0x41, 0x42, 0x43, 0x44

# Layouts (header fields included), from docs/protocol.md.
HEADER = struct.Struct("<HBB")
LOGON_S = struct.Struct("<HBBIQQQQB7x32s")            # 80
HEARTBEAT_S = struct.Struct("<HBB4xQ")                # 16
NEW_ORDER_S = struct.Struct("<HBBBBBBQIIqQ")          # 40
LOGOUT_S = struct.Struct("<HBBB3x")                   # 8
LOGON_ACCEPTED_S = struct.Struct("<HBBIQQB7x")        # 32
LOGON_REJECTED_S = struct.Struct("<HBBB3x")           # 8
EXEC_REPORT_S = struct.Struct("<HBBBBBBQQQIIqQQQQBB6x")  # 88
SESSION_REJECT_S = struct.Struct("<HBBBB2x")          # 8

SIDES = {1: "buy", 2: "sell"}
ORDER_TYPES = {"gtc": 1, "ioc": 2, "fok": 3, "post_only": 4, "market": 5}
ORDER_TYPE_NAMES = {v: k for k, v in ORDER_TYPES.items()}
EXEC_TYPES = {1: "accepted", 2: "rejected", 3: "partial_fill", 4: "fill", 5: "cancelled",
              6: "replaced", 7: "decremented", 8: "mass_cancelled"}
REJECT_REASONS = {1: "unknown_instrument", 2: "price_off_tick", 3: "quantity_off_lot",
                  4: "quantity_out_of_range", 5: "outside_price_band", 6: "post_only_would_cross",
                  7: "fok_not_fillable", 8: "unknown_order", 9: "duplicate_order_id", 10: "not_owner",
                  11: "capacity_exhausted", 12: "instrument_halted", 13: "invalid_side",
                  14: "invalid_order_type", 15: "invalid_price", 16: "invalid_stp",
                  17: "malformed_command", 18: "throttled", 19: "not_authorised"}
CANCEL_REASONS = {1: "user_requested", 2: "unfilled", 3: "self_trade_prevention", 4: "mass_cancel",
                  5: "cancel_on_disconnect", 6: "admin"}
SESSION_REJECT_REASONS = {1: "bad_length", 2: "oversize", 3: "unknown_type", 4: "bad_version",
                          5: "invalid_field", 6: "not_logged_on", 7: "already_logged_on",
                          8: "unexpected_message"}
LOGON_REJECT_REASONS = {1: "unknown_key", 2: "bad_signature", 3: "stale_timestamp",
                        4: "nonce_reused", 5: "already_logged_on"}
DISCONNECT_REASONS = {1: "client_logout", 2: "heartbeat_timeout", 3: "throttled",
                      4: "protocol_error", 5: "logon_timeout", 6: "logon_rejected",
                      7: "transport_closed", 8: "server_shutdown"}
ROLES = {1: "trade", 2: "read", 3: "admin"}


def logon_frame(key_id, secret, last_seq_seen, heartbeat_ms=1000, cancel_on_disconnect=False):
    ts_ns = time.time_ns()
    nonce = struct.unpack("<Q", os.urandom(8))[0]
    signature = hmac.new(secret, struct.pack("<QQQ", key_id, ts_ns, nonce), hashlib.sha256).digest()
    flags = 1 if cancel_on_disconnect else 0
    return LOGON_S.pack(80, LOGON, VERSION, heartbeat_ms, key_id, ts_ns, nonce, last_seq_seen,
                        flags, signature)


def new_order_frame(side, order_type, client_order_id, account, instrument, price, qty, stp=0):
    flags = 0 if price is None else 1
    return NEW_ORDER_S.pack(40, NEW_ORDER, VERSION, side, order_type, stp, flags, client_order_id,
                            account, instrument, 0 if price is None else price, qty)


def logout_frame():
    return LOGOUT_S.pack(8, LOGOUT, VERSION, 1)


def frames(buf):
    """Yields (msg_type, frame) for each complete frame at the front of buf, removing them."""
    while len(buf) >= 4:
        length, msg_type, version = HEADER.unpack_from(buf, 0)
        if length < 4 or length > MAX_FRAME or version != VERSION:
            raise ValueError("bad frame header from the server")
        if len(buf) < length:
            break
        frame = bytes(buf[:length])
        del buf[:length]
        yield msg_type, frame


def describe(msg_type, f):
    """A readable line for a server frame, and whether the session goes on after it."""
    if msg_type == LOGON_ACCEPTED:
        _, _, _, hb, last_seq, replay_from, role = LOGON_ACCEPTED_S.unpack(f)
        return ("LogonAccepted role=%s heartbeat_ms=%d last_seq=%d replay_from=%d"
                % (ROLES.get(role, role), hb, last_seq, replay_from)), True
    if msg_type == LOGON_REJECTED:
        reason = LOGON_REJECTED_S.unpack(f)[3]
        return "LogonRejected reason=%s" % LOGON_REJECT_REASONS.get(reason, reason), False
    if msg_type == HEARTBEAT:
        return "Heartbeat seq=%d" % HEARTBEAT_S.unpack(f)[3], True
    if msg_type == SESSION_REJECT:
        _, _, _, reason, ref = SESSION_REJECT_S.unpack(f)
        return ("SessionReject reason=%s ref_msg_type=%d"
                % (SESSION_REJECT_REASONS.get(reason, reason), ref)), False
    if msg_type == LOGOUT:
        reason = LOGOUT_S.unpack(f)[3]
        return "Logout reason=%s" % DISCONNECT_REASONS.get(reason, reason), False
    if msg_type == EXECUTION_REPORT:
        (_, _, _, exec_type, side, reason, flags, session_seq, engine_seq, client_order_id, account,
         instrument, price, qty, leaves, cum, trade_id, cmd_kind, order_type) = EXEC_REPORT_S.unpack(f)
        et = EXEC_TYPES.get(exec_type, str(exec_type))
        line = ("ExecutionReport #%d %s side=%s order=%d account=%d instrument=%d price=%d qty=%d"
                % (session_seq, et, SIDES.get(side, side), client_order_id, account, instrument,
                   price, qty))
        if flags & 4:
            line += " leaves=%d cum=%d" % (leaves, cum)
        if exec_type == 2:
            line += " reason=%s" % REJECT_REASONS.get(reason, reason)
        elif exec_type in (5, 7, 8):
            line += " reason=%s" % CANCEL_REASONS.get(reason, reason)
        if exec_type in (3, 4):
            line += " trade_id=%d" % trade_id
        if exec_type == 1:
            line += " type=%s" % ORDER_TYPE_NAMES.get(order_type, order_type)
        if flags & 8:
            line += " (gateway)"
        line += " engine_seq=%d" % engine_seq
        return line, True
    return "unknown message type %d" % msg_type, True


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9001)
    p.add_argument("--key", type=int, default=1, help="API key id (default: the demo trade key)")
    p.add_argument("--secret", default="tickwire-demo-trade-secret",
                   help="API key secret (default: the demo trade key's)")
    p.add_argument("--account", type=int, default=1)
    p.add_argument("--instrument", type=int, default=1, help="1 = BTC-USD, 2 = ETH-USD in the demo")
    p.add_argument("--side", choices=["buy", "sell"], default="buy")
    p.add_argument("--order-type", choices=list(ORDER_TYPES), default="gtc")
    p.add_argument("--qty", type=int, default=5)
    p.add_argument("--price", type=int, default=30000, help="limit price; omit with --order-type market")
    p.add_argument("--client-order-id", type=int, default=None)
    p.add_argument("--last-seq-seen", type=int, default=2**64 - 1,
                   help="highest session sequence already seen (default: no replay; 0 = all)")
    p.add_argument("--wait", type=float, default=1.0, help="seconds without a report before leaving")
    a = p.parse_args()

    try:
        sock = socket.create_connection((a.host, a.port), timeout=5)
    except OSError as e:
        print("cannot connect to %s:%d: %s" % (a.host, a.port, e), file=sys.stderr)
        return 1
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()

    def read_frames(timeout):
        sock.settimeout(timeout)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return None
        if not data:
            raise ConnectionError("server closed the connection")
        buf.extend(data)
        return list(frames(buf))

    sock.sendall(logon_frame(a.key, a.secret.encode(), a.last_seq_seen))
    deadline = time.time() + 10
    logged_on = False
    while not logged_on:
        if time.time() > deadline:
            print("no answer to the logon", file=sys.stderr)
            return 1
        for msg_type, f in read_frames(1.0) or []:
            line, go_on = describe(msg_type, f)
            print(line)
            if not go_on:
                return 2
            if msg_type == LOGON_ACCEPTED:
                logged_on = True

    side = 1 if a.side == "buy" else 2
    price = None if a.order_type == "market" else a.price
    coid = a.client_order_id if a.client_order_id is not None else time.time_ns() // 1000
    sock.sendall(new_order_frame(side, ORDER_TYPES[a.order_type], coid, a.account, a.instrument,
                                 price, a.qty))
    print("sent NewOrder %s %s qty=%d price=%s client_order_id=%d"
          % (a.side, a.order_type, a.qty, price, coid))
    reports = 0
    last = time.time()
    first_deadline = time.time() + 10
    while True:
        now = time.time()
        if reports and now - last > a.wait:
            break
        if not reports and now > first_deadline:
            print("no execution report within 10 s", file=sys.stderr)
            break
        try:
            got = read_frames(0.1)
        except ConnectionError as e:
            print(str(e), file=sys.stderr)
            return 2
        for msg_type, f in got or []:
            line, go_on = describe(msg_type, f)
            print(line)
            if msg_type == EXECUTION_REPORT:
                reports += 1
                last = time.time()
            if not go_on:
                return 2
    sock.sendall(logout_frame())
    try:
        for msg_type, f in read_frames(1.0) or []:
            print(describe(msg_type, f)[0])
    except ConnectionError:
        pass
    sock.close()
    return 0 if reports else 2


if __name__ == "__main__":
    sys.exit(main())
