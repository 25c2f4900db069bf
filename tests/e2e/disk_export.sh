#!/usr/bin/env bash
# e2e: the real `romulus disk-export` (docs/DISK.md §8, §8a). An NBD client
# writes and reads back; a tap client attaches with a full copy (and a
# second one is refused), is SIGKILLed, and the export serves the guest on;
# a garbage tap client is dropped; a second export on the same sockets is
# refused; SIGTERM exits 0 and removes both socket files. Usage errors are
# clear. The clients are tests/e2e/lib/disk_export_client.py (written from
# the protocol documents, not from Romulus' encoders).
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"
client() { python3 "$E2E_LIB/disk_export_client.py" "$@"; }

store=$T/disk.img
truncate -s 8M "$store"
nbd=$T/x.nbd
tapsock=$T/x.tap

# Usage and validation errors, before anything listens.
"$ROMULUS" disk-export --store "$store" --name xvda --nbd-socket "$nbd" >"$T/u1.log" 2>&1
[[ $? -eq 2 ]] || check_fail "missing --tap-socket did not exit 2"
assert_grep "$T/u1.log" "tap-socket is required" "missing flag named"
"$ROMULUS" disk-export --store "$store" --name 'x/y' --nbd-socket "$nbd" --tap-socket "$tapsock" >"$T/u2.log" 2>&1
[[ $? -eq 2 ]] || check_fail "an unclean --name did not exit 2"
truncate -s 1000 "$T/odd.img"
"$ROMULUS" disk-export --store "$T/odd.img" --name xvda --nbd-socket "$nbd" --tap-socket "$tapsock" >"$T/u3.log" 2>&1
[[ $? -eq 1 ]] || check_fail "a store of 1000 bytes did not exit 1"
assert_grep "$T/u3.log" "multiple of 512" "odd store size named"
"$ROMULUS" disk-export --store "$T/none.img" --name xvda --nbd-socket "$nbd" --tap-socket "$tapsock" >"$T/u4.log" 2>&1
[[ $? -eq 1 ]] || check_fail "a missing store did not exit 1"
long=$T/$(printf 'l%.0s' {1..120})
"$ROMULUS" disk-export --store "$store" --name xvda --nbd-socket "$long" --tap-socket "$tapsock" >"$T/u5.log" 2>&1
[[ $? -eq 1 ]] || check_fail "a too long socket path did not exit 1"
assert_grep "$T/u5.log" "longer than" "long socket path named"
[[ ! -e $nbd && ! -e $tapsock ]] || check_fail "a refused start left socket files"

# A stale socket file (a dead export's) is replaced.
python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])" "$tapsock"
[[ -S $tapsock ]] || fail "could not make a stale socket file"

bg exp "$T/export.log" "$ROMULUS" disk-export --store "$store" --name xvda --nbd-socket "$nbd" --tap-socket "$tapsock"
wait_until 20 "export ready" grep -q "ready" "$T/export.log"
assert_grep "$T/export.log" "removed stale tap socket" "stale socket replaced"
[[ $(stat -c %a "$nbd") == 600 && $(stat -c %a "$tapsock") == 600 ]] || check_fail "socket files are not mode 0600"

client nbd-write "$nbd" xvda 0 65536 1 >"$T/w1.log" 2>&1 || check_fail "first write: $(cat "$T/w1.log")"

# A replicator attaches (full copy, sealed), a second is refused.
bg tapc "$T/tap1.log" python3 "$E2E_LIB/disk_export_client.py" tap-attach "$tapsock"
wait_until 20 "tap client attached" grep -q "attached tag=" "$T/tap1.log"
client tap-refused "$tapsock" >"$T/refused.log" 2>&1 || check_fail "second tap client: $(cat "$T/refused.log")"
assert_grep "$T/refused.log" "already has a replicator attached" "second replicator refused"
client nbd-write "$nbd" xvda 1048576 65536 2 >"$T/w2.log" 2>&1 || check_fail "write while attached: $(cat "$T/w2.log")"

# SIGKILL the replicator mid-epoch: the export detaches and serves on.
kill9 "$tapc"
wait_until 20 "detach logged" grep -q "replicator detached" "$T/export.log"
client nbd-write "$nbd" xvda 2097152 131072 3 >"$T/w3.log" 2>&1 || check_fail "write after the replicator died: $(cat "$T/w3.log")"

# Garbage on the tap: dropped, the NBD side unaffected, a replicator attaches after.
client tap-garbage "$tapsock" >"$T/garbage.log" 2>&1 || check_fail "garbage client: $(cat "$T/garbage.log")"
wait_until 20 "garbage client dropped" grep -q "tap client dropped" "$T/export.log"
client nbd-write "$nbd" xvda 4096 4096 4 >"$T/w4.log" 2>&1 || check_fail "write after garbage: $(cat "$T/w4.log")"
bg tapc2 "$T/tap2.log" python3 "$E2E_LIB/disk_export_client.py" tap-attach "$tapsock"
wait_until 20 "second attachment" grep -q "attached tag=" "$T/tap2.log"
kill9 "$tapc2"

# A second export on live sockets is refused; the first is unaffected.
"$ROMULUS" disk-export --store "$store" --name xvda --nbd-socket "$nbd" --tap-socket "$tapsock" >"$T/dup.log" 2>&1
[[ $? -eq 1 ]] || check_fail "a second export on live sockets did not exit 1"
assert_grep "$T/dup.log" "in use" "live socket refused"
client nbd-write "$nbd" xvda 8192 4096 5 >"$T/w5.log" 2>&1 || check_fail "write after the refused duplicate: $(cat "$T/w5.log")"

# The data is on the store.
python3 - "$store" "$E2E_LIB" <<'PY' || check_fail "store content differs from what was written"
import sys
sys.path.insert(0, sys.argv[2])
from disk_export_client import pattern
d = open(sys.argv[1], "rb").read()
for off, n, seed in [(0, 4096, 1), (4096, 4096, 4), (8192, 4096, 5), (1048576, 65536, 2), (2097152, 131072, 3)]:
    assert d[off:off + n] == pattern(n, seed), off
PY

kill -TERM "$exp"
wait_exit "$exp" 20
[[ $EXIT_CODE -eq 0 ]] || check_fail "SIGTERM: export exited $EXIT_CODE"
[[ ! -e $nbd && ! -e $tapsock ]] || check_fail "socket files left after SIGTERM"
assert_no_crash "$T/export.log"
finish
