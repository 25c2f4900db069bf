#!/bin/sh
#@ title: xl remus, the reference Romulus is compared to (same guest, interval and boot)
#@ runs: baseline
#@ guests: pv pvh
#@ order: 10
#@ gate: no — a comparison: when xl remus fails, that is its result in the side-by-side table
# Scenario "remus-baseline" (runs in dom0):
#  1. create the counter guest (128 MiB, 1 vCPU, $LAB_GUEST_TYPE: PV, or PVH on the stock
#     hypervisor, where log-dirty goes through HAP), wait until it counts;
#  2. `xl remus -F -n -d -e -i $LAB_INTERVAL_MS -s "" guest1 "<tap> | xl migrate-receive -r -e"`
#     to localhost for $LAB_DURATION s; the stream goes through `labstat tap`, which counts
#     wire bytes per checkpoint; `labstat pausemon` samples the primary's state every 1 ms
#     to measure how long the guest is suspended per checkpoint;
#  3. kill the sender (xl + its save helper) and destroy the primary (= primary host dies);
#     the figures of the run are printed here, whatever the failover does;
#  4. the backup must resume the guest from the last checkpoint: its counter continues
#     (first value > 1, then counts on) instead of restarting from 1.
# A failure (LAB-FAIL) names what xl remus did: whether the receiver reported a failover,
# which domain it made, its state, which console log the copy wrote. The copy's output is
# read from guest-guest1--incoming.log or, when the receiver renamed it to guest1 before
# xenconsoled attached, from guest-guest1.log after the primary's lines (pitfall 9: on
# 2026-12-03 the scenario read only the first and failed a run with "backup counter 0").
. /lab/dom0-lib.sh
D=${LAB_DURATION:-30}
I=${LAB_INTERVAL_MS:-100}
W=$LAB_WORK
PM=""; RP=""
# whatever happens, nothing of this run outlives it (the next scenarios share dom0)
cleanup() {
  for _p in $PM $RP $(lab_pids_by_arg --save-domain) $(lab_pids_by_arg migrate-receive) $(lab_pids_by_arg 'labstat tap'); do
    [ "$_p" = $$ ] || kill -9 "$_p" 2>/dev/null
  done
}
trap cleanup EXIT

rm -f "$(lab_console guest1)" "$(lab_console guest1--incoming)"
TC=$(lab_now)
lab_guest_create guest1 "$LAB_GUEST_MEM" 1 >"$W/domid" || lab_fail "xl create guest1 failed"
P=$(cat "$W/domid")
C1=$(lab_console guest1)
lab_wait_counter "$C1" 3 240 || { tail -n 20 "$C1"; lab_fail "guest1 never counted to 3"; }
lab_note "guest1 (${LAB_GUEST_TYPE:-pv}) domid=$P counting ($(lab_counter_last "$C1")) $(lab_elapsed "$TC") s after xl create"

labstat pausemon "$P" "$W/pause.log" 1000 &
PM=$!
T0=$(lab_now)
xl remus -F -n -d -e -i "$I" -s "" guest1 "labstat tap $W/stream.log | xl migrate-receive -r -e" \
  >"$W/remus.log" 2>&1 &
RP=$!

# evidence: what xl remus and its receiver said, the domains, the consoles
evidence() {
  echo "--- xl remus + xl migrate-receive (last 25 lines):"; tail -n 25 "$W/remus.log"
  echo "--- labstat tap:"; tail -n 3 "$W/stream.log" 2>/dev/null
  echo "--- xl list:"; xl list
  echo "--- console logs:"; ls -l /var/log/xen/console/
  [ -f "$W/backup-console.log" ] && { echo "--- the copy's console (last 5):"; tail -n 5 "$W/backup-console.log"; }
}

# wait for the first checkpoint (whole memory), then let it run for D seconds
# (time-based, and well inside the scenario timeout, so the diagnostics get printed)
FIRST_LIMIT=${LAB_FIRST_CKPT_LIMIT:-$(( ${LAB_SCENARIO_TIMEOUT:-600} / 2 ))}
until grep -q '^ckpt 1 ' "$W/stream.log" 2>/dev/null; do
  if ! kill -0 $RP 2>/dev/null || [ "$(lab_elapsed "$T0" | cut -d. -f1)" -ge "$FIRST_LIMIT" ]; then
    evidence; lab_fail "xl remus made no first checkpoint in $(lab_elapsed "$T0") s"
  fi
  sleep 1
done
T1=$(lab_now)
lab_note "first checkpoint after $(lab_elapsed "$T0") s; replicating for $D s at $I ms"
sleep "$D"
kill -0 $RP 2>/dev/null || { evidence; lab_fail "xl remus exited during the run"; }
LAST_PRIMARY=$(lab_counter_last "$C1")

# ---- 3. primary host "dies": kill the sender and its save helper, destroy the primary domain
SAVE_HELPERS=$(lab_pids_by_arg --save-domain)
kill -9 $RP $SAVE_HELPERS 2>/dev/null
TK=$(lab_now)
RAN=$(lab_elapsed "$T1")
xl destroy "$P" >/dev/null 2>&1
C1N=$(lab_lines "$C1")  # later lines of guest1's log are the copy's (lab_replica_console)
lab_note "sender killed after $RAN s of checkpointing (xl destroy of the primary took $(lab_elapsed "$TK") s); primary counter was $LAST_PRIMARY"
kill $PM 2>/dev/null; wait $PM 2>/dev/null; PM=""
i=0  # the tap writes its summary line at the end of its stream
until grep -q '^summary' "$W/stream.log" 2>/dev/null || [ $i -ge 50 ]; do i=$((i+1)); sleep 0.2; done

S=$(grep '^summary' "$W/stream.log")
PS=$(grep '^summary' "$W/pause.log")
v() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
lab_figure "tool=xl-remus guest=${LAB_GUEST_TYPE:-pv} interval_ms=$I duration_s=$D checkpoints=$(v "$S" checkpoints)" \
  "first_ckpt_bytes=$(v "$S" first_bytes) bytes_per_ckpt_mean=$(v "$S" steady_mean_bytes)" \
  "bytes_per_ckpt_median=$(v "$S" steady_median_bytes) pages_per_ckpt_mean=$(v "$S" steady_mean_pages)" \
  "period_median_ms=$(v "$S" period_median_ms) total_bytes=$(v "$S" total_bytes) parse=$(v "$S" parse)"
lab_figure "tool=xl-remus pause_median_ms=$(v "$PS" steady_median_ms) pause_p90_ms=$(v "$PS" steady_p90_ms)" \
  "pause_max_ms=$(v "$PS" steady_max_ms) pause_mean_ms=$(v "$PS" steady_mean_ms) pauses=$(v "$PS" pauses)" \
  "first_pause_ms=$(v "$PS" first_ms)"
lab_summary "xl remus ${I}ms: $(v "$S" checkpoints) ckpts, $(v "$S" steady_mean_bytes) B/ckpt mean, pause median $(v "$PS" steady_median_ms) ms"
[ "$(v "$S" checkpoints)" -ge 5 ] 2>/dev/null || { evidence; lab_fail "too few checkpoints: $(v "$S" checkpoints)"; }

# ---- 4. the backup resumes
CB=$W/backup-console.log
i=0
until lab_replica_console guest1 "$C1N" "$CB"; [ "$(lab_counter_last "$CB")" -ge $((LAST_PRIMARY + 2)) ] 2>/dev/null; do
  i=$((i+1))
  if [ $i -gt 300 ]; then
    # What did xl remus do? The receiver says "Remus Failover for domain N" once it has
    # restored the last checkpoint; then it renames the copy and unpauses it.
    evidence
    FD=$(sed -n 's/.*Failover for domain \([0-9]*\).*/\1/p' "$W/remus.log" | tail -n1)
    if [ -z "$FD" ]; then
      WHAT="the receiver never reported a failover (last words: $(tail -n1 "$W/remus.log" | cut -c1-100))"
    elif ! xl list "$FD" >/dev/null 2>&1; then
      WHAT="the receiver failed over to domain $FD, which no longer exists"
    else
      WHAT="the receiver failed over to domain $FD ($(xl list "$FD" | awk 'NR==2 {print $1 ", state " $5}')), whose console (${LAB_REPLICA_LOGS:-no log}) shows counter $(lab_counter_last "$CB")"
    fi
    lab_fail "xl remus: the backup did not resume counting within 60 s: $WHAT; the primary was at $LAST_PRIMARY"
  fi
  sleep 0.2
done
RESUMED=$(lab_elapsed "$TK")
sleep 1
lab_replica_console guest1 "$C1N" "$CB"

# the counter must continue: after the resume, values never restart from 1
FIRST_BACKUP=$(tr -d '\r' <"$CB" | awk '/COUNTER/ { if (m == "" || $2+0 < m) m = $2+0 } END { print m }')
lab_note "backup console ($LAB_REPLICA_LOGS) counters: $(tr -d '\r' <"$CB" | awk '/COUNTER/ {printf "%s ", $2}' | tail -c 120)"
lab_note "receiver: $(grep -E 'Failover|rename|unpause' "$W/remus.log" | tr '\n' ' ' | cut -c1-200)"
[ -n "$FIRST_BACKUP" ] && [ "$FIRST_BACKUP" -gt 1 ] || { evidence; lab_fail "xl remus: the backup's counter restarted (min $FIRST_BACKUP)"; }
xl list | sed 's/^/LAB-NOTE remus-baseline xl-list: /'
lab_figure "tool=xl-remus failover_primary_counter=$LAST_PRIMARY failover_backup_min_counter=$FIRST_BACKUP" \
  "failover_resume_s=$RESUMED"
lab_summary "failover counter $LAST_PRIMARY->$FIRST_BACKUP"
echo "remus-baseline: OK"
exit 0
