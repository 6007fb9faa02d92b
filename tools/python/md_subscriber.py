#!/usr/bin/env python3
"""Tickwire market-data subscriber, written from docs/market-data.md alone.

Subscribes to instruments, rebuilds each book from the Snapshot and the DeltaBatches after it,
checks that every sequenced message starts right after the previous one and that every checksum
matches, and on a problem sends Resume(last good seq).

    python3 tools/python/md_subscriber.py --url ws://127.0.0.1:9100/md --instruments 1,2 --count 1000

With `--key-file PATH` it sends the read key of a feed that requires one.

Exit status: 0 if no gap and no checksum failure was seen, 1 otherwise, 2 on a usage/connection
error. At the end it prints one JSON line per instrument with its book, then a summary line.
"""

import argparse
import asyncio
import json
import struct
import sys
import time
import zlib

try:
    import websockets
except ImportError:  # pragma: no cover
    print("md_subscriber: the 'websockets' package is required (pip install websockets)", file=sys.stderr)
    sys.exit(3)

VERSION = 1
SNAPSHOT, DELTA_BATCH, TRADE, CANDLE, STATUS, HEARTBEAT, ERROR = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, UNSUBSCRIBE, RESUME, PING = 0x81, 0x82, 0x83, 0x84
BUY, SELL = 1, 2
LEVEL = struct.Struct("<qQIB3x")  # price, qty, orders, side, reserved
HEAD = struct.Struct("<BBHI")  # type, version, type-specific, instrument


class Book:
    def __init__(self):
        self.sides = {BUY: {}, SELL: {}}
        self.halted = False
        self.seq = None  # last applied sequence; None = not in sync
        self.last_good = None

    def set_level(self, side, price, qty, orders):
        if qty == 0:
            self.sides[side].pop(price, None)
        else:
            self.sides[side][price] = (qty, orders)

    def levels(self, side):
        prices = sorted(self.sides[side], reverse=(side == BUY))
        return [(p, *self.sides[side][p]) for p in prices]

    def crc(self):
        data = b"".join(
            struct.pack("<qQI", p, q, o) for side in (BUY, SELL) for (p, q, o) in self.levels(side)[:10]
        )
        return zlib.crc32(data) & 0xFFFFFFFF


def client_msg(kind, instrument, extra=None):
    b = HEAD.pack(kind, VERSION, 0, instrument)
    if extra is not None:
        b += struct.pack("<Q", extra)
    return b


def levels_of(buf, offset, count):
    out = []
    for k in range(count):
        price, qty, orders, side = LEVEL.unpack_from(buf, offset + k * LEVEL.size)
        out.append((side, price, qty, orders))
    return out


class Subscriber:
    def __init__(self, instruments):
        self.books = {i: Book() for i in instruments}
        self.stats = dict(msgs=0, sequenced=0, snapshots=0, trades=0, gaps=0, crc_failures=0, resumes=0, errors=0)

    def handle(self, buf):
        """Applies one server message; returns a Resume message to send, or None."""
        self.stats["msgs"] += 1
        if len(buf) < 8:
            return None
        kind, version, b2, instrument = HEAD.unpack_from(buf, 0)
        if version != VERSION:
            return None
        if kind == ERROR:
            self.stats["errors"] += 1
            (detail,) = struct.unpack_from("<Q", buf, 8)
            print(f"md_subscriber: error code {b2} instrument {instrument} detail {detail}", file=sys.stderr)
            return None
        book = self.books.get(instrument)
        if book is None:
            return None
        if kind == SNAPSHOT:
            seq, nb, na, crc = struct.unpack_from("<QIII", buf, 8)
            book.sides = {BUY: {}, SELL: {}}
            for side, p, q, o in levels_of(buf, 32, nb + na):
                book.set_level(side, p, q, o)
            book.halted = bool(b2 & 1)
            book.seq = seq
            book.last_good = seq
            self.stats["snapshots"] += 1
            if book.crc() != crc:
                return self.fail(book, instrument, "crc_failures", f"snapshot crc {crc:08x} != {book.crc():08x}")
            return None
        if kind == DELTA_BATCH:
            first, last = struct.unpack_from("<QQ", buf, 8)
        elif kind in (TRADE, CANDLE, STATUS):
            (first,) = struct.unpack_from("<Q", buf, 8)
            last = first
        else:
            return None  # heartbeat, unknown types
        if book.seq is None:
            return None  # waiting for a snapshot or replay after a resume
        if last <= book.seq:
            return None  # already applied (replayed after a resume)
        if first != book.seq + 1:
            return self.fail(book, instrument, "gaps", f"gap: expected {book.seq + 1}, got {first}")
        if kind == DELTA_BATCH:
            (crc,) = struct.unpack_from("<I", buf, 32)
            for side, p, q, o in levels_of(buf, 40, b2):
                book.set_level(side, p, q, o)
            if book.crc() != crc:
                return self.fail(book, instrument, "crc_failures", f"crc {crc:08x} != {book.crc():08x} at {last}")
        elif kind == STATUS:
            book.halted = b2 == 1
        elif kind == TRADE:
            self.stats["trades"] += 1
        book.seq = last
        book.last_good = last
        self.stats["sequenced"] += 1
        return None

    def fail(self, book, instrument, counter, why):
        self.stats[counter] += 1
        self.stats["resumes"] += 1
        print(f"md_subscriber: instrument {instrument}: {why}; resuming", file=sys.stderr)
        book.seq = None
        last = book.last_good if book.last_good is not None else 2**64 - 1
        return client_msg(RESUME, instrument, last)


def read_key(path):
    """The first line of `path` that is neither blank nor a # comment, trimmed."""
    with open(path) as f:
        for line in f:
            k = line.strip()
            if k and not k.startswith("#"):
                return k
    raise OSError(f"{path}: no key in it")


async def run(args):
    instruments = [int(x) for x in args.instruments.split(",") if x]
    sub = Subscriber(instruments)
    deadline = time.monotonic() + args.duration if args.duration > 0 else None
    # A read key travels as the subprotocol "tickwire-key.KEY" (docs: Access: read keys), not in
    # the URL, so it stays out of logs.
    protocols = ["tickwire-key." + read_key(args.key_file)] if args.key_file else None
    async with websockets.connect(args.url, max_size=None, compression=None, subprotocols=protocols) as ws:
        for i in instruments:
            await ws.send(client_msg(SUBSCRIBE, i))
        while True:
            if args.count and sub.stats["sequenced"] >= args.count:
                break
            if args.until_halted and all(b.seq is not None and b.halted for b in sub.books.values()):
                break
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if timeout == 0.0:
                break
            try:
                msg = await asyncio.wait_for(ws.recv(), timeout)
            except asyncio.TimeoutError:
                break
            if isinstance(msg, str):
                continue
            reply = sub.handle(msg)
            if reply is not None:
                await ws.send(reply)
    for i, b in sub.books.items():
        print(json.dumps({"instrument": i, "seq": b.seq, "halted": b.halted, "crc": b.crc(),
                          "bids": [list(l) for l in b.levels(BUY)], "asks": [list(l) for l in b.levels(SELL)]},
                         separators=(",", ":")))
    print("summary " + " ".join(f"{k}={v}" for k, v in sub.stats.items()))
    return 0 if sub.stats["gaps"] == 0 and sub.stats["crc_failures"] == 0 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="ws://127.0.0.1:9100/md")
    ap.add_argument("--instruments", default="1", help="comma-separated instrument ids")
    ap.add_argument("--count", type=int, default=0, help="stop after this many sequenced messages")
    ap.add_argument("--duration", type=float, default=0, help="stop after this many seconds")
    ap.add_argument("--until-halted", action="store_true", help="stop once every instrument is halted")
    ap.add_argument("--key-file", help="file holding the feed's read key (first non-comment line)")
    args = ap.parse_args()
    try:
        sys.exit(asyncio.run(run(args)))
    except (OSError, websockets.exceptions.WebSocketException) as e:
        print(f"md_subscriber: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
