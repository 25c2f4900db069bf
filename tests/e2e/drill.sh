#!/usr/bin/env bash
# e2e: operations — `romulus drill --all`, the control socket on a running
# pair (status shows PROTECTED at the right epoch, `set interval` changes the
# achieved period, bad requests exit 2), `romulus drill verify` (both ends
# agree per region at one epoch), metrics textfile, and `romulus switchover`
# (the backup activates from exactly the final epoch; verify passes).
# Every wait is a poll with a deadline; no timing thresholds.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

j() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d'"$2"')' "$1"; }

# 1. Kill drills, every phase, real processes.
out=$("$ROMULUS" drill --all --epoch 8 --interval 20ms --json --dir "$T/drills" 2>"$T/drill-stderr.log")
rc=$?
echo "$out"
[[ $rc -eq 0 ]] || check_fail "romulus drill --all exited $rc"
n=$(grep -c '"passed":true' <<<"$out")
[[ $n -eq 7 ]] || check_fail "drill --all: $n of 7 phases passed"
# It must really check: a phase name it does not know is a usage error.
"$ROMULUS" drill --kill-at zz >/dev/null 2>&1
[[ $? -eq 2 ]] || check_fail "drill --kill-at zz should exit 2"

# 2. A running pair with control sockets.
make_key "$T/key"
port=$(free_port)
start_backup bpid "$T/backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" --image "$T/img" \
  --events-json "$T/events.json" --control-socket "$T/b.sock" --run-after-failover 30s \
  --metrics-textfile "$T/backup.prom"
bg ppid "$T/primary.log" "$ROMULUS" replicate --guest "sim:size=64M,workload=hotset" --to "127.0.0.1:$port" \
  --psk-file "$T/key" --interval 50ms --stats-json "$T/stats.json" --control-socket "$T/p.sock" \
  --metrics-textfile "$T/primary.prom"
protected() { [[ $(rj_status "$T/p.sock" protection) == PROTECTED ]]; }
wait_until 120 "primary PROTECTED via ctl status" protected
# The stats file is written after each ack, so read it first: the live
# answer that follows can only be at or after it, and the epoch in progress
# is the last acked one or the next.
stats_acked=$(jcheck last-acked "$T/stats.json")
st=$("$ROMULUS" ctl --json --socket "$T/p.sock" status)
log "ctl status: $st (stats file: last acked $stats_acked)"
[[ $(j "$st" '["role"]') == primary ]] || check_fail "status role: $st"
acked=$(j "$st" '["last_acked"]')
epoch=$(j "$st" '["epoch"]')
[[ $acked -ge $stats_acked && $acked -ge 1 ]] || check_fail "status last_acked $acked vs stats $stats_acked"
[[ $epoch -eq $acked || $epoch -eq $((acked + 1)) ]] || check_fail "status epoch $epoch vs last_acked $acked"
[[ $(j "$st" '["output_commit"]') == "none (output not committed)" ]] || check_fail "output_commit: $st"
bst=$("$ROMULUS" ctl --json --socket "$T/b.sock" status)
log "backup status: $bst"
[[ $(j "$bst" '["role"]') == backup && $(j "$bst" '["protection"]') == PROTECTED ]] || check_fail "backup status: $bst"

# Bad requests: exit 2, and the daemon keeps serving.
"$ROMULUS" ctl --json --socket "$T/p.sock" frobnicate >/dev/null 2>&1
[[ $? -eq 2 ]] || check_fail "ctl frobnicate should exit 2"
"$ROMULUS" ctl --json --socket "$T/p.sock" set interval 1ms >/dev/null 2>&1
[[ $? -eq 2 ]] || check_fail "ctl set interval 1ms should exit 2"
"$ROMULUS" ctl --json --socket "$T/p.sock" failover >/dev/null 2>&1
[[ $? -eq 1 ]] || check_fail "ctl failover on the primary should be refused (exit 1)"
"$ROMULUS" ctl --json --socket "$T/nope.sock" status >/dev/null 2>"$T/nosock.err"
[[ $? -ne 0 ]] && grep -q "no such socket" "$T/nosock.err" || check_fail "missing socket: $(cat "$T/nosock.err")"

# set interval 20ms: the achieved period in the stats follows. Three
# consecutive epochs after the change all have a period under the old
# interval's 50 ms (20 ms target; polled, no threshold on speed: under load
# we just wait longer for such a run).
"$ROMULUS" ctl --json --socket "$T/p.sock" set interval 20ms >/dev/null || check_fail "set interval 20ms"
from=$(j "$("$ROMULUS" ctl --json --socket "$T/p.sock" status)" '["epoch"]')
short_periods() {
  python3 - "$T/stats.json" "$from" <<'PY'
import json, sys
run = 0
for line in open(sys.argv[1]):
    try: d = json.loads(line)
    except ValueError: continue
    if "epoch" not in d or d.get("totals") or d["epoch"] <= int(sys.argv[2]) + 1: continue
    run = run + 1 if d["period_us"] < 45000 else 0
    if run >= 3: sys.exit(0)
sys.exit(1)
PY
}
wait_until 120 "periods near the new 20 ms interval in the stats" short_periods
st=$("$ROMULUS" ctl --json --socket "$T/p.sock" status)
[[ $(j "$st" '["interval_us"]') -eq 20000 ]] || check_fail "status interval after set: $st"

# drill verify: both ends agree at one epoch, per region.
v=$("$ROMULUS" drill verify --socket "$T/p.sock" --backup-socket "$T/b.sock" --regions 16 --json)
rc=$?
log "drill verify: $v"
[[ $rc -eq 0 && $(j "$v" '["match"]') == True ]] || check_fail "drill verify: rc $rc, $v"

# Metrics textfiles exist and carry the documented names.
wait_until 30 "primary metrics file" test -s "$T/primary.prom"
for m in romulus_epoch romulus_last_acked_epoch romulus_protected romulus_pause_seconds_count \
  romulus_wire_bytes_total romulus_dirty_pages_total romulus_cache_hits_total romulus_resyncs_total \
  romulus_output_committed; do
  grep -q "^$m{" "$T/primary.prom" || check_fail "metric $m missing from primary.prom"
done
wait_until 30 "backup metrics file" test -s "$T/backup.prom"
for m in romulus_committed_epoch romulus_failover romulus_receive_reallocations; do
  grep -q "^$m{" "$T/backup.prom" || check_fail "metric $m missing from backup.prom"
done

# pause / resume.
"$ROMULUS" ctl --json --socket "$T/p.sock" pause >/dev/null || check_fail "pause"
unprot() { [[ $(rj_status "$T/p.sock" protection) == UNPROTECTED ]]; }
wait_until 30 "UNPROTECTED while paused" unprot
prom_paused() { grep -q '^romulus_protected{.*} 0$' "$T/primary.prom" && grep -q '^romulus_paused{.*} 1$' "$T/primary.prom"; }
wait_until 30 "metrics say unprotected and paused" prom_paused
"$ROMULUS" ctl --json --socket "$T/p.sock" resume >/dev/null || check_fail "resume"
wait_until 60 "PROTECTED again after resume" protected

# 3. Planned switchover: no lost epoch.
sw=$("$ROMULUS" switchover --socket "$T/p.sock" --backup-socket "$T/b.sock" --json)
rc=$?
log "switchover: $sw"
[[ $rc -eq 0 ]] || check_fail "switchover exited $rc: $sw"
final=$(j "$sw" '["final_epoch"]')
wait_exit "$ppid" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "primary exit $EXIT_CODE after switchover"
wait_until 30 "failover event" has_event "$T/events.json" failover
fo_epoch=$(jcheck field "$T/events.json" failover last_committed_epoch)
[[ $fo_epoch -eq $final ]] || check_fail "backup activated at $fo_epoch, final epoch was $final (lost epoch)"
[[ $(jcheck field "$T/events.json" failover activated) == true ]] || check_fail "not activated"
acked=$(jcheck last-acked "$T/stats.json")
[[ $acked -eq $final ]] || check_fail "primary's last acked $acked != final epoch $final"
assert_grep "$T/primary.log" "SWITCHOVER: the backup holds epoch $final" "primary logs the handover"
kill -TERM "$bpid" 2>/dev/null
wait_exit "$bpid" 30
verify_image "$T/img"

# 4. Operator-triggered failover on the backup (`ctl failover`): activates
# now from the last committed epoch, says why, and the image verifies.
port=$(free_port)
start_backup b2pid "$T/backup2.log" --listen "127.0.0.1:$port" --psk-file "$T/key" --image "$T/img2" \
  --events-json "$T/events2.json" --control-socket "$T/b2.sock"
bg p2pid "$T/primary2.log" "$ROMULUS" replicate --guest "sim:size=32M,workload=hotset" --to "127.0.0.1:$port" \
  --psk-file "$T/key" --interval 50ms --control-socket none
b2protected() { [[ $(rj_status "$T/b2.sock" protection) == PROTECTED ]]; }
wait_until 120 "second backup PROTECTED" b2protected
fo=$("$ROMULUS" ctl --json --socket "$T/b2.sock" failover)
rc=$?
log "ctl failover: $fo"
[[ $rc -eq 0 && $(j "$fo" '["activated"]') == True ]] || check_fail "ctl failover: rc $rc, $fo"
wait_exit "$b2pid" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "backup exit $EXIT_CODE after ctl failover"
[[ $(jcheck field "$T/events2.json" failover reason) == *"requested by the operator"* ]] ||
  check_fail "failover reason: $(jcheck field "$T/events2.json" failover reason)"
[[ $(jcheck field "$T/events2.json" failover last_committed_epoch) -eq $(j "$fo" '["epoch"]') ]] ||
  check_fail "failover epoch differs from the ctl answer"
kill -TERM "$p2pid" 2>/dev/null
wait_exit "$p2pid" 30
verify_image "$T/img2"
assert_no_crash "$T"/*.log
finish
