#!/bin/sh
#@ title: Romulus protects guest1 at the baseline's interval, the primary host dies, the backup resumes it
#@ runs: romulus
#@ guests: pv pvh
#@ order: 20
#@ skip-if: LAB_NO_ROMULUS_SCENARIO
# Scenario "romulus-scenario" (runs in the Xen lab's dom0; scripts/xen-lab --romulus PATH):
# Romulus protecting a real guest ($LAB_GUEST_TYPE: PV, or PVH), then a primary failure.
#  1. create the counter guest guest1 (128 MiB, 1 vCPU, $LAB_GUEST_TYPE), wait until it counts;
#  2. optionally (LAB_XEN_FIXTURE=1, needs romulus-xen) record 3 checkpoints of the raw
#     v2 stream, check tap+rebuild is byte-identical, and print a cut fixture as LAB-DATA lines;
#  3. the backup: `romulus restore --xen` listening on 127.0.0.1:$PORT;
#  4. the primary: `romulus replicate --domain guest1 --to 127.0.0.1:$PORT --interval
#     ${LAB_INTERVAL_MS}ms` for $LAB_DURATION s (>= 30 s) after its first checkpoint;
#  5. kill the replicator (-9) and destroy the primary domain (= the primary host dies);
#  6. the backup must resume the guest from the last committed checkpoint: its console
#     counter continues from the last checkpointed value (never restarts from 1), its failover
#     event names the primary's last acked epoch (or the next), and the domain is renamed
#     guest1 once the primary is gone.
# Read from Romulus' events and stats lines (scripts/lib/romulus-json.sh): the first ack is the
# primary's "protected" event, the failover the backup's "failover" event.
# Knobs (--env): LAB_ROMULUS_ACK_TIMEOUT (replicate --ack-timeout, 15s),
# LAB_ROMULUS_FAILOVER_TIMEOUT (restore --failover-timeout, 2s), LAB_ROMULUS_LOG_LEVEL (info),
# LAB_ROMULUS_REPLICATE_ARGS (extra replicate flags, e.g. "--encoder scalar"),
# LAB_ROMULUS_FIRST_TIMEOUT (s to wait for checkpoint 1, 600), LAB_ROMULUS_FAILOVER_LIMIT (s, 90),
# LAB_LIVE_STATS=1 (print the primary's latest epoch line every 2 s: the demo's live stats).
# The binary: /usr/bin/romulus, whose `restore` must know --xen. romulus-xen (xen/tools: the
# Xen driver alone), found as /usr/bin/romulus-xen or /lab/extra/romulus-xen, records the
# fixture (step 2) when asked.
. /lab/dom0-lib.sh
D=${LAB_DURATION:-30}
[ "$D" -ge 30 ] 2>/dev/null || D=30
I=${LAB_INTERVAL_MS:-100}
PORT=${LAB_ROMULUS_PORT:-7300}
W=$LAB_WORK

TOOL=""
for t in /usr/bin/romulus-xen /lab/extra/romulus-xen /usr/bin/romulus; do
  [ -x "$t" ] && timeout 10 "$t" 2>&1 | grep -q record-stream && { TOOL=$t; break; }
done
MODE=cli
[ -x /usr/bin/romulus ] && timeout 10 /usr/bin/romulus restore --help 2>&1 | grep -q -- '--xen' ||
  lab_fail "no Romulus with the Xen backend (/usr/bin/romulus restore --xen)"
lab_note "mode=cli (/usr/bin/romulus)"

# xenconsoled appends to a log named after the domain: a guest1 of an earlier scenario
# (the baseline) would make the new guest look booted and counting before it is.
rm -f "$(lab_console guest1)" "$(lab_console guest1--incoming)"
TC=$(lab_now)
lab_guest_create guest1 "$LAB_GUEST_MEM" 1 >"$W/domid" || lab_fail "xl create guest1 failed"
P=$(cat "$W/domid")
C1=$(lab_console guest1)
# (a PVH guest takes longer to count than a PV one: 20-30 s after xl create under TCG)
lab_wait_counter "$C1" 3 240 || { tail -n 20 "$C1"; lab_fail "guest1 never counted to 3"; }
lab_note "guest1 (${LAB_GUEST_TYPE:-pv}) domid=$P counting ($(lab_counter_last "$C1")) $(lab_elapsed "$TC") s after xl create"

# ---- 2. fixture: the raw stream of 3 checkpoints, verified, cut small
if [ -n "${LAB_XEN_FIXTURE:-}" ] && [ -n "$TOOL" ]; then
  if "$TOOL" record-stream --domain guest1 --out "$W/rec.bin" --checkpoints 3 --interval "$I" \
       >"$W/record.log" 2>&1; then
    lab_note "record-stream: $(grep 'recorded' "$W/record.log" | tail -n1)"
    "$TOOL" cut-fixture "$W/rec.bin" "$W/fixture.bin" >"$W/cut.log" 2>&1 || lab_fail "cut-fixture: $(cat "$W/cut.log")"
    "$TOOL" verify-stream "$W/fixture.bin" >"$W/verify.log" 2>&1 || lab_fail "fixture does not verify: $(cat "$W/verify.log")"
    lab_note "fixture: $(cat "$W/cut.log"); $(cat "$W/verify.log")"
    # Through the serial console, slowly: Xen drops console output it cannot send.
    gzip -9 -c "$W/fixture.bin" | base64 >"$W/fixture.b64"
    lab_note "fixture: $(wc -c <"$W/fixture.bin") bytes, $(wc -l <"$W/fixture.b64") base64 lines"
    n=0
    while IFS= read -r l; do
      echo "LAB-DATA xen-stream-fixture $l"
      n=$((n+1)); [ $((n % 20)) -eq 0 ] && sleep 0.2
    done <"$W/fixture.b64"
    echo "LAB-DATA-END xen-stream-fixture"
    rm -f "$W/rec.bin"
  else
    # The fixture is a side product: report, and go on with the replication proof.
    tail -n 5 "$W/record.log" | sed "s/^/LAB-NOTE $LAB_SCENARIO record: /"
    df -k /run 2>/dev/null | tail -n1 | sed "s/^/LAB-NOTE $LAB_SCENARIO df: /"
    lab_note "record-stream FAILED (no fixture)"
    rm -f "$W/rec.bin"
  fi
  lab_wait_counter "$C1" "$(( $(lab_counter_last "$C1") + 2 ))" 30 || lab_fail "guest1 stopped counting after recording"
fi

# ---- 3. backup
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/psk"
chmod 600 "$W/psk"  # romulus refuses a key file others can read
romulus restore --xen --no-fence --listen "127.0.0.1:$PORT" --psk-file "$W/psk" \
  --failover-timeout "${LAB_ROMULUS_FAILOVER_TIMEOUT:-2s}" --log-level "${LAB_ROMULUS_LOG_LEVEL:-info}" \
  --events-json "$W/events.jsonl" >"$W/backup.log" 2>&1 &
BP=$!
lab_evidence "$W/backup.log" "$W/events.jsonl" "$W/primary.log" "$W/pevents.jsonl" "$W/stats.jsonl"
lab_wait_listening "$W/backup.log" $BP

# ---- 4. primary
# The guest's pauses measured from outside, the same way as for xl remus (remus-baseline).
labstat pausemon "$P" "$W/pause.log" 1000 &
PM=$!
T0=$(lab_now)
# --stats-json: one JSON line per epoch (docs/STATS.md), a totals line at exit.
# Under TCG on a loaded host an ack can take seconds: the ack timeout is generous.
romulus replicate --domain guest1 --to "127.0.0.1:$PORT" --psk-file "$W/psk" --interval "${I}ms" \
  --ack-timeout "${LAB_ROMULUS_ACK_TIMEOUT:-15s}" --log-level "${LAB_ROMULUS_LOG_LEVEL:-info}" \
  --stats-json "$W/stats.jsonl" --events-json "$W/pevents.jsonl" ${LAB_ROMULUS_REPLICATE_ARGS:-} \
  >"$W/primary.log" 2>&1 &
RP=$!
FIRST_LIMIT=${LAB_ROMULUS_FIRST_TIMEOUT:-600}
# acked: the primary's "protected" event
first_acked() { rj_first_event "$W/pevents.jsonl" protected >/dev/null; }
until first_acked; do
  if ! kill -0 $RP 2>/dev/null; then
    # e.g. a replicator that does not protect this guest type says so and exits: its words
    # are the reason (the FAIL line shows it)
    lab_fail "the replicator exited before checkpoint 1 (${LAB_GUEST_TYPE:-pv} guest): $(grep -v '^ *$' "$W/primary.log" | tail -n1 | cut -c1-200)"
  fi
  if [ "$(lab_elapsed "$T0" | cut -d. -f1)" -ge "$FIRST_LIMIT" ]; then
    lab_fail "no first checkpoint after $(lab_elapsed "$T0") s"
  fi
  # A sign of life every ~30 s (the first checkpoint is the whole memory: minutes under TCG).
  PROG=$((${PROG:-0} + 1))
  [ $((PROG % 150)) -eq 0 ] && lab_note "waiting for checkpoint 1, $(lab_elapsed "$T0") s: primary: $(tail -n1 "$W/primary.log" | cut -c1-120) | backup: $(tail -n1 "$W/backup.log" | cut -c1-120)"
  sleep 0.2
done
T1=$(lab_now)
lab_note "first checkpoint acked after $(lab_elapsed "$T0") s; replicating for $D s at $I ms"
# Live stats (LAB_LIVE_STATS=1, scripts/demo): the primary's latest per-epoch line every 2 s,
# which scripts/xen-lab echoes to the terminal as it reads the serial log.
TE=$(( $(cut -d. -f1 /proc/uptime) + D ))
while [ "$(cut -d. -f1 /proc/uptime)" -lt "$TE" ]; do
  # A replicator that stops early (e.g. its guest shut down instead of suspending) is
  # reported at once, while the hypervisor's console ring still holds why.
  kill -0 $RP 2>/dev/null || break
  if [ -n "${LAB_LIVE_STATS:-}" ]; then
    grep '^{"epoch":' "$W/stats.jsonl" 2>/dev/null | tail -n1 >"$W/stats-last.jsonl"
    rj_csv "$W/stats-last.jsonl" '' '' epoch pause_us dirty_pages wire_bytes wire_bytes_per_page ack_latency_us acked |
      awk -F, -v t="$(lab_elapsed "$T1")" '
      { printf "LAB-STAT %ss epoch %d  pause %.1f ms  dirty %d pages  wire %d B (%.1f B/page)  ack %.1f ms  %s\n",
          t, $1, $2 / 1000, $3, $4, $5, $6 / 1000, $7 == "true" ? "acked" : "NOT ACKED" }'
    sleep 2
  else
    sleep 1
  fi
done
if ! kill -0 $RP 2>/dev/null; then
  wait $RP; RC=$?
  lab_fail "the replicator died during the run after $(lab_elapsed "$T1") s (exit $RC, $(rj_count "$W/stats.jsonl" acked true) epochs acked): $(grep -E ' (error|critical) ' "$W/primary.log" | tail -n1 | cut -c1-200)"
fi
kill -0 $BP 2>/dev/null || lab_fail "the backup died during the run"

# ---- 5. the primary host dies
LAST_PRIMARY=$(lab_counter_last "$C1")
kill -9 $RP 2>/dev/null
TK=$(lab_now)
xl destroy "$P" >/dev/null 2>&1
C1N=$(lab_lines "$C1")  # the primary is gone: later lines of its log are the backup's (below)
CKPTS=$(rj_count "$W/stats.jsonl" acked true)
lab_note "replicator killed and primary destroyed after $(lab_elapsed "$T1") s; $CKPTS checkpoints acked; primary counter was $LAST_PRIMARY"

# The acked epochs as short CSV lines (stopped_us = pause_us - suspend_us: the guest fully
# stopped, what labstat pausemon sees), a few hundred at most: the raw material of the figures.
{
  echo "epoch,suspend_us,stopped_us,pages,state_records,raw_bytes,wire_bytes,ack_wait_us,encode_us"
  rj_csv "$W/stats.jsonl" acked true epoch suspend_us pause_us dirty_pages state_records raw_bytes wire_bytes \
    ack_wait_us encode_us | awk -F, -v OFS=, '{ for (i = 1; i <= NF; i++) $i += 0; $3 = $3 - $2; print }'
} >"$W/stats.csv"
# LAB-DATA lines are saved by the host (build/xen-lab/data/), not echoed: a failure must stay
# readable in a short excerpt of the output.
sed "s/^/LAB-DATA $LAB_SCENARIO stats.csv /" "$W/stats.csv"

# ---- 6. failover
# xenconsoled names the log after the domain as it finds it: guest-guest1--incoming.log, or,
# when romulus renamed the replica to guest1 before xenconsoled attached (the primary was
# already destroyed), guest-guest1.log, appended after the primary's lines.
C2=$W/backup-console.log
lab_evidence "$C2"
FO_LIMIT=${LAB_ROMULUS_FAILOVER_LIMIT:-180}
until lab_replica_console guest1 "$C1N" "$C2"; [ "$(lab_counter_last "$C2")" -ge $((LAST_PRIMARY + 2)) ] 2>/dev/null; do
  if [ "$(lab_elapsed "$TK" | cut -d. -f1)" -ge "$FO_LIMIT" ]; then
    xl list; ls /var/log/xen/console/
    lab_fail "backup did not resume counting (backup counter $(lab_counter_last "$C2"), primary was $LAST_PRIMARY)"
  fi
  # First output of the resumed guest: kill -> detection -> activation -> the guest runs.
  [ -z "${FIRST_OUT:-}" ] && [ "$(lab_counter_last "$C2")" -gt 0 ] 2>/dev/null && FIRST_OUT=$(lab_elapsed "$TK")
  sleep 0.2
done
RESUMED=$(lab_elapsed "$TK")
kill $PM 2>/dev/null; wait $PM 2>/dev/null
FIRST_OUT=${FIRST_OUT:-$RESUMED}
FIRST_BACKUP=$(tr -d '\r' <"$C2" | awk '/COUNTER/ { if (m == "" || $2+0 < m) m = $2+0 } END { print m }')
lab_note "backup console ($LAB_REPLICA_LOGS) counters: $(tr -d '\r' <"$C2" | awk '/COUNTER/ {printf "%s ", $2}' | tail -c 120)"
[ -n "$FIRST_BACKUP" ] && [ "$FIRST_BACKUP" -gt 1 ] || lab_fail "backup counter restarted (min $FIRST_BACKUP)"
[ "$FIRST_BACKUP" -le $((LAST_PRIMARY + 1)) ] || lab_fail "backup counter skipped ahead ($FIRST_BACKUP > $LAST_PRIMARY + 1)"
if [ "$MODE" = cli ]; then
  # The exact checkpoint: the primary's last acked epoch, or the one after it (its ack was
  # on the way when the replicator died), never an older one.
  lab_wait_failover "$W/events.jsonl" "$W/backup.log"
  FO_EPOCH=$(rj_get "$LAB_FO" last_committed_epoch)
  LAST_ACKED=$(rj_last_acked "$W/stats.jsonl")
  [ -n "$FO_EPOCH" ] && [ "$FO_EPOCH" -ge "$LAST_ACKED" ] && [ "$FO_EPOCH" -le $((LAST_ACKED + 1)) ] ||
    lab_fail "the backup resumed from epoch '$FO_EPOCH'; the primary's last acked epoch was $LAST_ACKED"
  lab_note "failover from epoch $FO_EPOCH (primary's last acked: $LAST_ACKED)"
fi
i=0
until xl list 2>/dev/null | awk 'NR>1 {print $1}' | grep -qx guest1; do
  i=$((i+1)); [ $i -le 100 ] || { xl list; lab_fail "the backup domain was not renamed guest1"; }
  sleep 0.1
done
rj_evidence "$W/events.jsonl" 4 | sed "s/^/LAB-NOTE $LAB_SCENARIO backup event: /"
xl list | sed "s/^/LAB-NOTE $LAB_SCENARIO xl-list: /"

PS=$(grep '^summary' "$W/pause.log")
v() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
lab_figure "tool=romulus-$MODE guest=${LAB_GUEST_TYPE:-pv} pausemon_median_ms=$(v "$PS" steady_median_ms) pausemon_p90_ms=$(v "$PS" steady_p90_ms)" \
  "pausemon_max_ms=$(v "$PS" steady_max_ms) pausemon_mean_ms=$(v "$PS" steady_mean_ms) pausemon_pauses=$(v "$PS" pauses)"

# ---- figures (stats.csv: epoch,suspend_us,stopped_us,pages,state_records,raw_bytes,wire_bytes,ack_wait_us,encode_us)
FIG=$(tail -n +2 "$W/stats.csv" | awk -F, -v s="$LAB_SCENARIO" -v i="$I" -v d="$D" -v r="$RESUMED" -v fo="$FIRST_OUT" \
  -v lp="$LAST_PRIMARY" -v fb="$FIRST_BACKUP" -v mode="$MODE" '
  function med(a, n,   j, k, t) { for (j = 2; j <= n; j++) { t = a[j]; for (k = j - 1; k >= 1 && a[k] > t; k--) a[k+1] = a[k]; a[k+1] = t } return n ? a[int((n+1)/2)] : 0 }
  function p90(a, n) { return n ? a[int(n*0.9) > 0 ? int(n*0.9) : 1] : 0 }
  $1 == 1 { first_wire = $7; first_pages = $4; next }
  { n++; w[n] = $7; p[n] = $3 / 1000; sl[n] = $2 / 1000; pg[n] = $4; tw += $7; tp += $4 }
  END {
    printf "LAB-FIGURE %s tool=romulus-%s interval_ms=%s duration_s=%s checkpoints=%d first_ckpt_bytes=%s first_ckpt_pages=%s", s, mode, i, d, n + 1, first_wire, first_pages
    printf " bytes_per_ckpt_mean=%d bytes_per_ckpt_median=%d pages_per_ckpt_mean=%.0f\n", n ? tw / n : 0, med(w, n), n ? tp / n : 0
    mp = med(p, n); pp = p90(p, n); ms = med(sl, n)
    printf "LAB-FIGURE %s tool=romulus-%s pause_median_ms=%.1f pause_p90_ms=%.1f suspend_latency_median_ms=%.1f failover_first_output_s=%s failover_s=%s failover_primary_counter=%s failover_backup_min_counter=%s\n", s, mode, mp, pp, ms, fo, r, lp, fb
  }')
echo "$FIG"
f() { echo "$FIG" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n1; }
lab_summary "romulus ${I}ms: $(f checkpoints) ckpts, $(f bytes_per_ckpt_mean) B/ckpt mean, pause median $(v "$PS" steady_median_ms) ms, failover counter $LAST_PRIMARY->$FIRST_BACKUP"
exit 0
