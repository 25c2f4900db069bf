#!/usr/bin/env bash
# e2e: a slowloris flood cannot keep the primary out (issue 10, observation
# 4; docs/PROTOCOL.md §1.6).
#
# Anyone who can reach the backup's port can open connections without the
# key. With 200 idle connections held open (each one reopened as soon as the
# backup drops it), 20 that trickle a byte every half second and 20 that
# start a TLS ClientHello and stall, a primary started against the backup
# must reach PROTECTED (its first commit) while the flood goes on. Then: no
# failover, no crash, the drops are logged rate-limited (not one line each),
# and `romulus verify` passes on the image after a clean stop.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

FLOOD_SECS=60  # the helper exits by itself after this long

make_key "$T/key"
port=$(free_port)
start_backup bpid "$T/backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$T/img" --events-json "$T/events.json" --no-fence

# flood PORT SECONDS READY_FILE: keep 200 idle + 20 trickling + 20 stalled-TLS
# connections open, reopening any the backup closes, until SECONDS pass.
# Writes READY_FILE once all 240 are connected; prints totals every 2 s.
flood() {
  python3 - "$1" "$2" "$3" <<'PYEOF'
import select, socket, sys, time
port, secs, ready_file = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
end = time.time() + secs
TLS_START = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])
kinds = ["idle"] * 200 + ["trickle"] * 20 + ["tls"] * 20
conns = {}  # socket -> kind
opened = dropped = 0

def open_one(kind):
    global opened
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return
    s.setblocking(False)
    if kind == "tls":
        try:
            s.send(TLS_START)
        except OSError:
            pass
    conns[s] = kind
    opened += 1

for k in kinds:
    open_one(k)
with open(ready_file, "w") as f:
    f.write("%d\n" % len(conns))
last_trickle = last_report = time.time()
def report():
    print("flood: opened %d connections, %d closed by the backup, %d held now"
          % (opened, dropped, len(conns)), flush=True)
while time.time() < end:
    if time.time() - last_report >= 2:
        last_report = time.time()
        report()
    r, _, _ = select.select(list(conns), [], [], 0.1)
    for s in r:  # readable: the backup closed it (or sent an alert first)
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if data:
            continue
        kind = conns.pop(s)
        s.close()
        dropped += 1
        open_one(kind)
    if time.time() - last_trickle >= 0.5:
        last_trickle = time.time()
        for s, kind in list(conns.items()):
            if kind == "trickle":
                try:
                    s.send(b"x")
                except OSError:
                    pass
report()
PYEOF
}

bg fpid "$T/flood.log" flood "$port" "$FLOOD_SECS" "$T/flood.ready"
wait_until 30 "the flood has its 240 connections open" test -s "$T/flood.ready"
log "flood: $(cat "$T/flood.ready") connections open"

t0=$(date +%s%N)
bg ppid "$T/primary.log" "$ROMULUS" replicate --guest "sim:size=64M,workload=hotset" \
  --to "127.0.0.1:$port" --psk-file "$T/key" --interval 20ms --stats-json "$T/stats.json"
wait_until 45 "the primary's first commit (PROTECTED) under the flood" commit_at_least "$T/events.json" 1
t1=$(date +%s%N)
secs=$(python3 -c "print('%.2f' % (($t1 - $t0) / 1e9))")
log "figures: first commit ${secs}s after the primary started, with the flood running"
alive "$fpid" || check_fail "the flood helper ended before the primary was protected: the test proves nothing"
alive "$bpid" || fail "the backup died under the flood"

# Protection holds while the flood goes on (and the backup keeps dropping
# and the helper reopening): 12 s more, then commits must have kept coming.
first=$(last_commit "$T/events.json")
hold_end=$(($(date +%s) + 12))
past_hold() { (($(date +%s) >= hold_end)); }
wait_until 20 "12 s under the flood" past_hold
now_commit=$(last_commit "$T/events.json")
log "committed epoch $first at protection, $now_commit after 12 s more under the flood"
((now_commit >= first + 20)) || check_fail "only $((now_commit - first)) commits in 12 s under the flood"
alive "$fpid" || check_fail "the flood helper ended before the run under flood was over"
assert_no_failover "$T/events.json" "slowloris flood"

# A clean stop: BYE, the backup exits without activating.
kill -TERM "$ppid"
wait_exit "$ppid" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "primary exited $EXIT_CODE after SIGTERM"
wait_exit "$bpid" 30
assert_exit_not_signal "$EXIT_CODE" "backup"
[[ $EXIT_CODE -eq 0 ]] || check_fail "backup exited $EXIT_CODE after the primary's clean stop"
kill9 "$fpid"
log "$(tail -n 1 "$T/flood.log")"
assert_no_failover "$T/events.json" "slowloris flood, after the clean stop"
assert_no_crash "$T/backup.log" "$T/primary.log"

# The backup dropped the strays, and said so in a few lines, not hundreds.
full=$(grep -c "unauthenticated connection from" "$T/backup.log")
summaries=$(grep -c "unauthenticated connections\? dropped in the last" "$T/backup.log")
log "backup log: $full full drop line(s), $summaries summary line(s)"
grep -m3 "unauthenticated connection" "$T/backup.log" | sed 's/^/  /'
((full >= 1)) || check_fail "the backup never logged a dropped unauthenticated connection"
# Strays were dropped all along (every 2 s), the first line came before the
# primary started and 12+ s have passed: a summary is due.
((summaries >= 1)) || check_fail "no summary of dropped connections after 12 s of flood"
elapsed=$((($(date +%s%N) - t0) / 1000000000))
((full + summaries <= 3 + elapsed / 10)) ||
  check_fail "$((full + summaries)) drop lines in ${elapsed}s: the drop log is not rate-limited"

verify_image "$T/img"
finish
