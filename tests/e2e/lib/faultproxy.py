#!/usr/bin/env python3
"""Fault-injecting TCP proxy for Romulus end-to-end tests (python3 stdlib only).

Sits between a primary (`romulus replicate --insecure --to PROXY`) and a
backup (`romulus restore --insecure`).  It forwards both directions and, ONCE
(on the first connection that gets that far), after AFTER bytes from the
primary, injects one fault:

  flip      XOR one byte of the primary's stream (header or payload: either
            way a checksum must catch it)
  truncate  forward up to a point strictly inside a frame, then close both
            sides (the backup sees EOF in the middle of a frame)
  oversize  at the next frame boundary, insert a 24-byte PAGES header whose
            length is 64 MiB (over the 8 MiB limit) but whose header_check is
            VALID, so the receiver must reject it on the length, not the check
  stall     stop forwarding in both directions (sockets stay open) for
            --stall-for seconds, then carry on
  none      plain pass-through

With --min-epoch E the fault also waits until the primary's stream has reached
a frame of epoch >= E (so the backup has committed something before it).

After the fault every byte (and every later connection) passes through.

The proxy parses the primary's frames as they go by (docs/PROTOCOL.md §2.1)
and checks each header_check with its own XXH3 implementation, so a broken
implementation here shows up as "XXH3 SELF-CHECK MISMATCH" in its log instead
of as a mysterious test result.  Progress lines go to stderr, prefixed
"faultproxy:".
"""
import argparse
import os
import socket
import struct
import sys
import threading
import time

M64 = (1 << 64) - 1
PRIME64_1 = 0x9E3779B185EBCA87
# First 128 bytes of XXH3's default secret (xxhash.h, XXH3_kSecret).
SECRET = bytes([
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
])

HEADER = 24
TYPE_PAGES = 0x10
MAX_PAYLOAD = 8 << 20
OVERSIZE = 64 << 20


def _r64(b, off):
    return struct.unpack_from("<Q", b, off)[0]


def _mix16(data, off, soff):
    lo = _r64(data, off) ^ _r64(SECRET, soff)
    hi = _r64(data, off + 8) ^ _r64(SECRET, soff + 8)
    p = lo * hi
    return (p ^ (p >> 64)) & M64


def xxh3_64(data):
    """XXH3_64bits(data), seed 0, for 17 <= len(data) <= 128 (all a header needs)."""
    n = len(data)
    if not 16 < n <= 128:
        raise ValueError("xxh3_64 here only covers 17..128 bytes")
    acc = (n * PRIME64_1) & M64
    if n > 32:
        if n > 64:
            if n > 96:
                acc += _mix16(data, 48, 96) + _mix16(data, n - 64, 112)
            acc += _mix16(data, 32, 64) + _mix16(data, n - 48, 80)
        acc += _mix16(data, 16, 32) + _mix16(data, n - 32, 48)
    acc += _mix16(data, 0, 0) + _mix16(data, n - 16, 16)
    h = acc & M64
    h ^= h >> 37
    h = (h * 0x165667919E3779F9) & M64
    h ^= h >> 32
    return h


def header_check(first20):
    return xxh3_64(first20) & 0xFFFFFFFF


def make_header(ftype, flags, length, epoch, payload_check):
    first = struct.pack("<BBHIQI", ftype, flags, 0, length, epoch, payload_check)
    return first + struct.pack("<I", header_check(first))


def log(msg):
    sys.stderr.write("faultproxy: %s\n" % msg)
    sys.stderr.flush()


class FrameTracker:
    """Follows frame boundaries in the primary's byte stream."""

    def __init__(self):
        self.hdr = b""
        self.payload_left = 0
        self.epoch = 0
        self.verified = 0
        self.mismatches = 0
        self.broken = False  # stream no longer parseable (after our own fault)

    def copy(self):
        c = FrameTracker()
        c.hdr, c.payload_left, c.epoch, c.verified = self.hdr, self.payload_left, self.epoch, self.verified
        return c

    def at_boundary(self):
        return not self.broken and self.payload_left == 0 and not self.hdr

    def feed(self, data):
        i = 0
        n = len(data)
        while i < n and not self.broken:
            if self.payload_left:
                k = min(self.payload_left, n - i)
                self.payload_left -= k
                i += k
                continue
            k = min(HEADER - len(self.hdr), n - i)
            self.hdr += data[i:i + k]
            i += k
            if len(self.hdr) == HEADER:
                h = self.hdr
                self.hdr = b""
                want = struct.unpack_from("<I", h, 20)[0]
                if header_check(h[:20]) == want:
                    self.verified += 1
                else:
                    self.mismatches += 1
                    log("XXH3 SELF-CHECK MISMATCH on a header from the primary: %s" % h.hex())
                    self.broken = True
                    return
                length = struct.unpack_from("<I", h, 4)[0]
                self.epoch = struct.unpack_from("<Q", h, 8)[0]
                self.payload_left = length


class Proxy:
    def __init__(self, args):
        self.args = args
        self.fault_done = threading.Event()
        self.lock = threading.Lock()
        self.conn_no = 0

    def serve(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.args.listen_port))
        ls.listen(8)
        port = ls.getsockname()[1]
        if self.args.port_file:
            tmp = self.args.port_file + ".tmp"
            with open(tmp, "w") as f:
                f.write("%d\n" % port)
            os.rename(tmp, self.args.port_file)
        log("listening on 127.0.0.1:%d -> %s:%d, fault=%s after %d bytes, from epoch %d"
            % (port, self.args.host, self.args.port, self.args.fault, self.args.after, self.args.min_epoch))
        while True:
            c, addr = ls.accept()
            self.conn_no += 1
            if self.args.single:
                # Serve this one connection, then refuse every later one
                # (a primary that never gets back to the backup).
                ls.close()
                log("--single: no longer accepting connections")
                self.handle(c, self.conn_no)
                while True:
                    time.sleep(3600)
            threading.Thread(target=self.handle, args=(c, self.conn_no), daemon=True).start()

    def handle(self, client, no):
        try:
            server = socket.create_connection((self.args.host, self.args.port), timeout=5)
            server.settimeout(None)
        except OSError as e:
            log("conn %d: cannot reach the backup: %s" % (no, e))
            client.close()
            return
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log("conn %d: opened" % no)
        st = {"stall_until": 0.0, "closed": False}

        def close_both(why):
            with self.lock:
                if st["closed"]:
                    return
                st["closed"] = True
            log("conn %d: closing both sides (%s)" % (no, why))
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def wait_stall():
            while time.time() < st["stall_until"] and not st["closed"]:
                time.sleep(0.02)

        def backup_to_primary():
            try:
                while True:
                    data = server.recv(65536)
                    wait_stall()
                    if not data:
                        break
                    client.sendall(data)
            except OSError as e:
                log("conn %d: backup->primary: %s" % (no, e))
            close_both("backup side ended")

        def primary_to_backup():
            tracker = FrameTracker()
            sent = 0
            try:
                while True:
                    data = client.recv(65536)
                    wait_stall()
                    if not data:
                        break
                    data, close_after = self.maybe_fault(no, data, sent, tracker, st)
                    tracker.feed(data)
                    server.sendall(data)
                    sent += len(data)
                    if close_after:
                        time.sleep(0.05)  # let the prefix reach the backup before the FIN
                        break
            except OSError as e:
                log("conn %d: primary->backup: %s" % (no, e))
            finally:
                log("conn %d: %d bytes from the primary, %d headers passed the XXH3 self-check, %d failed"
                    % (no, sent, tracker.verified, tracker.mismatches))
            close_both("primary side ended")

        threading.Thread(target=backup_to_primary, daemon=True).start()
        primary_to_backup()
        client.close()
        server.close()

    def maybe_fault(self, no, data, sent, tracker, st):
        """Returns (bytes to forward, close the connection after forwarding them)."""
        a = self.args
        if a.fault == "none" or self.fault_done.is_set() or sent + len(data) <= a.after:
            return data, False
        if tracker.epoch < a.min_epoch and not tracker.broken:
            return data, False  # wait until the primary streams epoch >= --min-epoch
        i = max(0, a.after - sent)
        if a.fault == "flip":
            probe = tracker.copy()
            probe.feed(data[:i])
            if a.flip_in == "header":
                # Move to the next frame boundary and flip a byte of that
                # header's length field (offset 4).
                while not probe.at_boundary() and i < len(data):
                    probe.feed(data[i:i + 1])
                    i += 1
                if not probe.at_boundary() or i + 4 >= len(data):
                    return data, False
                i += 4
            where = "payload" if probe.payload_left else "header"
            out = bytearray(data)
            out[i] ^= 0x5A
            self.fault_done.set()
            log("conn %d: FLIPPED byte at stream offset %d (0x%02x -> 0x%02x) in a frame %s, epoch ~%d"
                % (no, sent + i, data[i], out[i], where, probe.epoch))
            tracker.broken = True  # our own corruption: stop self-checking this connection
            return bytes(out), False
        if a.fault == "truncate":
            # Forward up to a point strictly inside a frame, then close both sides.
            probe = tracker.copy()
            probe.feed(data[:i])
            while probe.at_boundary() and i < len(data):
                probe.feed(data[i:i + 1])
                i += 1
            if probe.at_boundary():
                return data, False  # this chunk ends on a boundary: try the next one
            self.fault_done.set()
            log("conn %d: TRUNCATING at stream offset %d (inside a frame of epoch ~%d, %d payload bytes "
                "missing), then closing" % (no, sent + i, probe.epoch, probe.payload_left))
            tracker.broken = True
            return data[:i], True
        if a.fault == "oversize":
            # Insert the bogus header at the first frame boundary at or after `after`.
            probe = tracker.copy()
            probe.feed(data[:i])
            while not probe.at_boundary() and i < len(data):
                probe.feed(data[i:i + 1])
                i += 1
            if not probe.at_boundary() or probe.verified == 0:
                return data, False  # no boundary here, or no header self-checked yet: wait
            hdr = make_header(TYPE_PAGES, 0, OVERSIZE, probe.epoch, 0)
            self.fault_done.set()
            log("conn %d: INJECTED oversize PAGES header (length %d > %d, valid header_check 0x%08x) "
                "at stream offset %d, epoch %d, after %d self-checked headers"
                % (no, OVERSIZE, MAX_PAYLOAD, struct.unpack_from("<I", hdr, 20)[0], sent + i,
                   probe.epoch, probe.verified))
            tracker.broken = True
            return data[:i] + hdr + data[i:], False
        if a.fault == "stall":
            self.fault_done.set()
            st["stall_until"] = time.time() + a.stall_for
            log("conn %d: STALLING both directions for %.1f s at stream offset %d (epoch ~%d)"
                % (no, a.stall_for, sent, tracker.epoch))
            while time.time() < st["stall_until"] and not st["closed"]:
                time.sleep(0.02)
            log("conn %d: stall over, forwarding again" % no)
            return data, False
        return data, False


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen-port", type=int, default=0, help="0 = any free port (see --port-file)")
    p.add_argument("--port-file", help="write the port actually listened on to this file")
    p.add_argument("--to", required=True, help="backup HOST:PORT")
    p.add_argument("--fault", choices=["none", "flip", "truncate", "oversize", "stall"], default="none")
    p.add_argument("--after", type=int, default=0, help="bytes from the primary before the fault")
    p.add_argument("--flip-in", choices=["any", "header"], default="any",
                   help="flip: any byte at the offset, or the length field of the next header")
    p.add_argument("--min-epoch", type=int, default=0,
                   help="and not before the primary streams a frame of this epoch or later")
    p.add_argument("--stall-for", type=float, default=5.0, help="seconds a stall lasts")
    p.add_argument("--single", action="store_true",
                   help="serve only the first connection; refuse later ones (the primary cannot come back)")
    p.add_argument("--selftest", action="store_true", help="check the XXH3 code and exit")
    args = p.parse_args()
    if args.selftest:
        # Known answer: XXH3_64bits of bytes 0..19 (from the reference implementation).
        got = xxh3_64(bytes(range(20)))
        want = 0x287CAA944E605EAD
        print("xxh3 self-test: %016x (want %016x): %s" % (got, want, "ok" if got == want else "MISMATCH"))
        return 0 if got == want else 1
    host, _, port = args.to.rpartition(":")
    args.host, args.port = host, int(port)
    Proxy(args).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
