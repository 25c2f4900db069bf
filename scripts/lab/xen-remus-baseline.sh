#!/bin/sh
# Scenario "remus-baseline" (runs in dom0): the reference `xl remus` run Romulus is compared to.
#  1. create the counter guest (128 MiB, 1 vCPU, PV), wait until it counts;
#  2. `xl remus -F -n -d -e -i $LAB_INTERVAL_MS -s "" guest1 "<tap> | xl migrate-receive -r -e"`
#     to localhost for $LAB_DURATION s; the stream goes through `labstat tap`, which counts
#     wire bytes per checkpoint; `labstat pausemon` samples the primary's state every 1 ms
#     to measure how long the guest is suspended per checkpoint;
#  3. kill the sender (xl + its save helper) and destroy the primary (= primary host dies);
#  4. the backup must resume the guest from the last checkpoint: its counter continues
#     (first value > 1, then counts on) instead of restarting from 1.
. /lab/dom0-lib.sh
D=${LAB_DURATION:-30}
I=${LAB_INTERVAL_MS:-100}
W=$LAB_WORK

lab_guest_create guest1 128 1 >"$W/domid" || lab_fail "xl create guest1 failed"
P=$(cat "$W/domid")
C1=$(lab_console guest1)
lab_wait_counter "$C1" 3 240 || { tail -n 20 "$C1"; lab_fail "guest1 never counted to 3"; }
lab_note "guest1 domid=$P counting ($(lab_counter_last "$C1"))"

labstat pausemon "$P" "$W/pause.log" 1000 &
PM=$!
T0=$(lab_now)
xl remus -F -n -d -e -i "$I" -s "" guest1 "labstat tap $W/stream.log | xl migrate-receive -r -e" \
  >"$W/remus.log" 2>&1 &
RP=$!

# wait for the first checkpoint (whole memory), then let it run for D seconds
# (time-based, and well inside the scenario timeout, so the diagnostics get printed)
FIRST_LIMIT=${LAB_FIRST_CKPT_LIMIT:-$(( ${LAB_SCENARIO_TIMEOUT:-600} / 2 ))}
until grep -q '^ckpt 1 ' "$W/stream.log" 2>/dev/null; do
  if ! kill -0 $RP 2>/dev/null || [ "$(lab_elapsed "$T0" | cut -d. -f1)" -ge "$FIRST_LIMIT" ]; then
    tail -n 30 "$W/remus.log"; cat "$W/stream.log" 2>/dev/null | tail -n 3; xl list
    lab_fail "no first checkpoint after $(lab_elapsed "$T0") s"
  fi
  sleep 1
done
T1=$(lab_now)
lab_note "first checkpoint after $(lab_elapsed "$T0") s; replicating for $D s at $I ms"
sleep "$D"
kill -0 $RP 2>/dev/null || { tail -n 30 "$W/remus.log"; lab_fail "xl remus died during the run"; }
ckpts_run=$(grep -c '^ckpt ' "$W/stream.log")
LAST_PRIMARY=$(lab_counter_last "$C1")

# primary host "dies": kill the sender and its save helper, destroy the primary domain
SAVE_HELPERS=$(lab_pids_by_arg --save-domain)
kill -9 $RP $SAVE_HELPERS 2>/dev/null
TK=$(lab_now)
xl destroy "$P" >/dev/null 2>&1
lab_note "sender killed after $(lab_elapsed "$T1") s of checkpointing; primary counter was $LAST_PRIMARY"

# the backup resumes: console log keeps its creation name (pitfall 9)
C2=$(lab_console guest1--incoming)
i=0
until [ "$(lab_counter_last "$C2")" -ge $((LAST_PRIMARY + 2)) ] 2>/dev/null; do
  i=$((i+1))
  if [ $i -gt 300 ]; then
    xl list; tail -n 5 "$C2"; tail -n 20 "$W/remus.log"
    lab_fail "backup did not resume counting (backup counter $(lab_counter_last "$C2"), primary was $LAST_PRIMARY)"
  fi
  sleep 0.2
done
RESUMED=$(lab_elapsed "$TK")
kill $PM 2>/dev/null; wait $PM 2>/dev/null
sleep 1

# the counter must continue: after the resume, values never restart from 1
FIRST_BACKUP=$(tr -d '\r' <"$C2" | awk '/COUNTER/ { if (m == "" || $2+0 < m) m = $2+0 } END { print m }')
lab_note "backup console counters: $(tr -d '\r' <"$C2" | awk '/COUNTER/ {printf "%s ", $2}' | tail -c 120)"
[ -n "$FIRST_BACKUP" ] && [ "$FIRST_BACKUP" -gt 1 ] || lab_fail "backup counter restarted (min $FIRST_BACKUP)"
xl list | sed 's/^/LAB-NOTE remus-baseline xl-list: /'

S=$(grep '^summary' "$W/stream.log")
PS=$(grep '^summary' "$W/pause.log")
v() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
lab_figure "tool=xl-remus interval_ms=$I duration_s=$D checkpoints=$(v "$S" checkpoints)" \
  "first_ckpt_bytes=$(v "$S" first_bytes) bytes_per_ckpt_mean=$(v "$S" steady_mean_bytes)" \
  "bytes_per_ckpt_median=$(v "$S" steady_median_bytes) pages_per_ckpt_mean=$(v "$S" steady_mean_pages)" \
  "period_median_ms=$(v "$S" period_median_ms) total_bytes=$(v "$S" total_bytes) parse=$(v "$S" parse)"
lab_figure "tool=xl-remus pause_median_ms=$(v "$PS" steady_median_ms) pause_p90_ms=$(v "$PS" steady_p90_ms)" \
  "pause_max_ms=$(v "$PS" steady_max_ms) pause_mean_ms=$(v "$PS" steady_mean_ms) pauses=$(v "$PS" pauses)" \
  "first_pause_ms=$(v "$PS" first_ms)"
lab_figure "tool=xl-remus failover_primary_counter=$LAST_PRIMARY failover_backup_min_counter=$FIRST_BACKUP" \
  "failover_resume_s=$RESUMED"
[ "$(v "$S" checkpoints)" -ge 5 ] 2>/dev/null || lab_fail "too few checkpoints: $(v "$S" checkpoints)"
echo "remus-baseline: OK"
exit 0
