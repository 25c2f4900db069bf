#!/usr/bin/env python3
"""Test clients for tests/e2e/disk_export.sh, written from docs (the NBD
fixed-newstyle handshake; the tap protocol of docs/DISK.md §8a), not from
Romulus' own encoders.

  nbd-write SOCK NAME OFFSET LEN SEED   write LEN pattern bytes at OFFSET, read them back, check
  tap-attach SOCK                       HELLO, PAUSE{full_copy}, SEAL of that tag; prints
                                        "attached tag=N records=R", then waits forever (to be killed)
  tap-refused SOCK                      expects ERROR instead of HELLO; prints its text
  tap-garbage SOCK                      HELLO, then 16 bytes of garbage; expects the export to close
  load SOCK NAME TAPSOCK PID EPOCHS MIB  EPOCHS epochs, each MIB MiB of writes (256 of 4 KiB, the rest
                                        1 MiB, random places) then PAUSE, SEAL (reading every
                                        record), ACKED; every 25th epoch twice the export's log
                                        budget, so the export drops it and the next PAUSE is a
                                        full copy. Prints the export's (PID) VmRSS after the
                                        first 50 epochs and at the end, and its VmHWM
Exit 0 on success, 1 with a message otherwise. Every read has a 20 s timeout.
"""
import random
import socket
import struct
import sys
import time

TIMEOUT = 20


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(path)
    return s


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise EOFError("peer closed after %d of %d bytes" % (len(b), n))
        b += chunk
    return b


def pattern(n, seed):
    x = (seed * 2654435761 + 1) & 0xFFFFFFFF
    out = bytearray(n)
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        out[i] = (x >> 16) & 0xFF
    return bytes(out)


def nbd_open(path, name):
    """Connects and negotiates (fixed newstyle, NBD_OPT_EXPORT_NAME): (socket, export size)."""
    s = connect(path)
    g = recv_exact(s, 18)
    if g[:8] != b"NBDMAGIC" or g[8:16] != b"IHAVEOPT":
        raise RuntimeError("not an NBD greeting")
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    n = name.encode()
    s.sendall(b"IHAVEOPT" + struct.pack(">II", 1, len(n)) + n)  # NBD_OPT_EXPORT_NAME
    size, _flags = struct.unpack(">QH", recv_exact(s, 10))
    return s, size


def nbd_write(path, name, offset, length, seed):
    s, size = nbd_open(path, name)
    if offset + length > size:
        raise RuntimeError("export is %d bytes" % size)
    data = pattern(length, seed)
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 7, offset, length) + data)  # WRITE
    magic, err, cookie = struct.unpack(">IIQ", recv_exact(s, 16))
    if magic != 0x67446698 or cookie != 7 or err != 0:
        raise RuntimeError("WRITE failed: magic %x error %d" % (magic, err))
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 8, offset, length))  # READ
    magic, err, cookie = struct.unpack(">IIQ", recv_exact(s, 16))
    if magic != 0x67446698 or cookie != 8 or err != 0:
        raise RuntimeError("READ failed: error %d" % err)
    if recv_exact(s, length) != data:
        raise RuntimeError("read back different bytes")
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 9, 0, 0))  # DISC
    s.close()
    print("nbd-write ok: %d bytes at %d" % (length, offset))


def tap_header(t, length):
    return struct.pack("<IHHII", 0x50415452, 1, t, length, 0)


def tap_read(s):
    magic, version, t, length, reserved = struct.unpack("<IHHII", recv_exact(s, 16))
    if magic != 0x50415452 or version != 1 or reserved != 0:
        raise RuntimeError("bad tap header")
    return t, recv_exact(s, length)


def tap_attach(path):
    s = connect(path)
    t, body = tap_read(s)
    if t != 1:
        raise RuntimeError("expected HELLO, got type %d: %r" % (t, body[4:]))
    s.sendall(tap_header(2, 8) + bytes([1]) + bytes(7))  # PAUSE{full_copy}
    t, body = tap_read(s)
    if t != 3:
        raise RuntimeError("expected PAUSED, got type %d: %r" % (t, body[4:]))
    (tag,) = struct.unpack("<Q", body)
    s.sendall(tap_header(4, 16) + struct.pack("<QII", tag, 10000, 0))  # SEAL
    records = 0
    while True:
        t, body = tap_read(s)
        if t == 5:
            records += struct.unpack("<I", body[4:8])[0]
        elif t == 6:
            if struct.unpack("<QQ", body[:16]) != (tag, records):
                raise RuntimeError("SEALED does not match")
            break
        else:
            raise RuntimeError("unexpected type %d: %r" % (t, body[4:]))
    print("attached tag=%d records=%d" % (tag, records), flush=True)
    while True:
        time.sleep(3600)


def tap_refused(path):
    s = connect(path)
    t, body = tap_read(s)
    if t != 7:
        raise RuntimeError("expected ERROR, got type %d" % t)
    print(body[4:].decode(errors="replace"))


def tap_garbage(path):
    s = connect(path)
    t, _ = tap_read(s)
    if t != 1:
        raise RuntimeError("expected HELLO")
    s.sendall(b"GARBAGE-GARBAGE!")
    try:
        rest = s.recv(1)
    except ConnectionResetError:
        rest = b""
    if rest:
        raise RuntimeError("the export answered garbage")
    print("dropped")


def vm_kib(pid, key):
    for line in open("/proc/%d/status" % pid):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError("no %s for pid %d" % (key, pid))


def load(path, name, tap_path, pid, epochs, mib):
    rnd = random.Random(7)
    s, size = nbd_open(path, name)
    t = connect(tap_path)
    kind, body = tap_read(t)
    if kind != 1:
        raise RuntimeError("expected HELLO, got type %d" % kind)
    (budget,) = struct.unpack("<Q", body[16:24])
    if not body[34] & 2:
        raise RuntimeError("the export does not take ACKED (HELLO feature bit 1)")
    if epochs < 50:
        raise RuntimeError("load needs at least 50 epochs (the first RSS sample)")
    data = bytes(rnd.getrandbits(8) for _ in range(1 << 20))
    cookie = 0
    full_copy = True
    sealed = dropped = 0
    warm = None
    for e in range(1, epochs + 1):
        t.sendall(tap_header(2, 8) + bytes([1 if full_copy else 0]) + bytes(7))
        kind, body = tap_read(t)
        if kind != 3:
            raise RuntimeError("epoch %d: expected PAUSED, got type %d: %r" % (e, kind, body[4:]))
        (tag,) = struct.unpack("<Q", body[:8])
        full_copy = False
        # The writes of the epoch that PAUSE just opened.
        want = (2 * budget + (1 << 20)) if e % 25 == 0 else mib << 20
        done = 0
        while done < want:
            n = 4096 if done < 256 * 4096 else min(1 << 20, want - done)
            off = rnd.randrange((size - n) // 4096 + 1) * 4096
            cookie += 1
            s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, cookie, off, n) + data[:n])
            magic, err, c = struct.unpack(">IIQ", recv_exact(s, 16))
            if magic != 0x67446698 or err != 0 or c != cookie:
                raise RuntimeError("WRITE failed: error %d" % err)
            done += n
        # Seal the epoch PAUSE ended (its records were written before it).
        t.sendall(tap_header(4, 16) + struct.pack("<QII", tag, 10000, 0))
        while True:
            kind, body = tap_read(t)
            if kind == 6:
                sealed += 1
                t.sendall(tap_header(8, 8) + struct.pack("<Q", tag))
                break
            if kind == 7:
                text = body[4:].decode(errors="replace")
                if "resync" not in text:
                    raise RuntimeError("epoch %d: SEAL refused for another reason: %s" % (e, text))
                dropped += 1
                full_copy = True
                break
            if kind != 5:
                raise RuntimeError("epoch %d: unexpected type %d" % (e, kind))
        if e == 50:
            warm = vm_kib(pid, "VmRSS")
    end = vm_kib(pid, "VmRSS")
    print("load sealed=%d dropped=%d rss_warm_kib=%d rss_end_kib=%d hwm_kib=%d budget=%d"
          % (sealed, dropped, warm, end, vm_kib(pid, "VmHWM"), budget), flush=True)


def main(argv):
    cmd = argv[1]
    if cmd == "nbd-write":
        nbd_write(argv[2], argv[3], int(argv[4]), int(argv[5]), int(argv[6]))
    elif cmd == "tap-attach":
        tap_attach(argv[2])
    elif cmd == "tap-refused":
        tap_refused(argv[2])
    elif cmd == "tap-garbage":
        tap_garbage(argv[2])
    elif cmd == "load":
        load(argv[2], argv[3], argv[4], int(argv[5]), int(argv[6]), int(argv[7]))
    else:
        raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except Exception as e:  # noqa: BLE001 - the message is the test's diagnostic
        print("disk_export_client: %s" % e, file=sys.stderr)
        sys.exit(1)
