#!/bin/sh
#@ title: an HVM guest's device model through checkpoint pauses (libxl's QMP lock, stop, state into a passed descriptor, cont) and the Xen driver's checkpoints, each with its device state; a backup that cannot resume HVM refuses; the guest runs on
#@ runs: romulus
#@ guests: hvm
#@ order: 5
# Scenario "hvm-device-model-scenario" (HVM boot, by hand: scripts/xen-lab --guest hvm
# --romulus PATH --extra build/<tree>/xen/romulus-xen --env LAB_GUEST_HAP=0 --no-baseline;
# docs/DEVICE-MODEL.md). What Romulus'
# checkpoint of an HVM guest will do to its device model, on the real one (qemu-system-xen
# as libxl starts it), before the driver uses it:
#  1. create guest1 (HVM, qemu-xen, kernel booted directly, serial console into a file);
#  2. romulus-xen dm-pause: QEMU's dirty log on, then 20 rounds of: domain paused, libxl's
#     QMP lock taken, QMP stop, add-fd + xen-save-devices-state into a memfd, remove-fd,
#     cont, lock released, domain unpaused (each round's times and the state's size);
#     meanwhile `xl qemu-monitor-command` asks the same device model 8 times (libxl's QMP
#     path, under the same lock): every one must be answered;
#  3. the lock and the socket were let go (one more round gets both), QEMU runs (xl asks
#     it), the lock Romulus took is libxl's file (xl's UUID) and none is left, and the guest counts on:
#     its vCPUs and its devices were continued every time;
#  4. the Xen driver checkpoints the guest 5 times (romulus-xen record-stream): each epoch
#     carries exactly one device state (a QEVM stream, STATE kind 6), QEMU runs, no lock is
#     left, the guest counts on;
#  4b. QEMU SIGSTOPped: the driver's session fails by its deadline saying QEMU's dirty log could
#     not be switched on, the guest is never left suspended, no lock file is left, and after
#     SIGCONT the guest counts on;
#  5. romulus replicate to romulus restore --xen: the backup refuses an HVM replica (it cannot
#     start the device model at failover yet), the primary reports its reason, no replica
#     domain is left, the guest and QEMU run on.
. /lab/dom0-lib.sh
W=$LAB_WORK
G=guest1
TOOL=""
for t in /usr/bin/romulus-xen /lab/extra/romulus-xen; do [ -x "$t" ] && TOOL=$t && break; done
[ -n "$TOOL" ] || lab_fail "no romulus-xen (scripts/xen-lab --extra build/<tree>/xen/romulus-xen)"

SERIAL=$(lab_guest_serial $G)
rm -f "$SERIAL"
T0=$(lab_now)
lab_guest_create $G "$LAB_GUEST_MEM" 1 >"$W/domid" || lab_fail "xl create $G (HVM) failed: $(cat "$W/create-$G.log")"
D=$(cat "$W/domid")
lab_evidence "$W/create-$G.log" "$SERIAL" "$W/dm-pause.log" "$W/xl-qmp.log" "/var/log/xen/qemu-dm-$G.log"
lab_wait_counter "$SERIAL" 3 300 || lab_fail "$G (HVM) never counted to 3 on its serial console"
lab_note "$G (hvm) domid=$D counting (3) $(lab_elapsed "$T0") s after xl create"

BEFORE=$(lab_counter_last "$SERIAL")
# xl talks to the same device model meanwhile (libxl's QMP path, under its lock): with the
# lock shared, neither side is turned away from the one-client socket.
: >"$W/xl-qmp.log"
( for i in 1 2 3 4 5 6 7 8; do
    xl qemu-monitor-command $G "info status" >>"$W/xl-qmp.log" 2>&1 || echo "XL-QMP-FAILED $i" >>"$W/xl-qmp.log"
    sleep 0.3
  done ) &
XLP=$!
"$TOOL" dm-pause --domain $G --count 20 >"$W/dm-pause.log" 2>&1 || lab_fail "romulus-xen dm-pause: $(tail -n 3 "$W/dm-pause.log")"
wait $XLP
ROUNDS=$(grep -c '^dm-pause round=' "$W/dm-pause.log")
[ "$ROUNDS" -eq 20 ] || lab_fail "$ROUNDS rounds of 20"
SUM=$(grep '^dm-pause domain=' "$W/dm-pause.log")
lab_note "$SUM"
lab_figure "$(echo "$SUM" | sed 's/^dm-pause //')"
grep -q XL-QMP-FAILED "$W/xl-qmp.log" && lab_fail "xl qemu-monitor-command failed beside the rounds: $(tr '\n' ' ' <"$W/xl-qmp.log")"
lab_note "xl qemu-monitor-command beside the rounds: $(grep -c 'VM status' "$W/xl-qmp.log") of 8 answered"

# The lock and the socket were let go: one more round gets both again; xl's QMP path works
# and QEMU runs.
"$TOOL" dm-pause --domain $G --count 1 >>"$W/dm-pause.log" 2>&1 || lab_fail "a round after the 20: $(tail -n 2 "$W/dm-pause.log")"
xl qemu-monitor-command $G "info status" >"$W/xl-status.txt" 2>&1 || lab_fail "xl qemu-monitor-command after the rounds: $(cat "$W/xl-status.txt")"
grep -q "running" "$W/xl-status.txt" || lab_fail "QEMU is not running after the rounds: $(cat "$W/xl-status.txt")"
# libxl's lock file is /var/lib/xen/userdata-l.DOMID.UUID.qmp-socket-lock (the format in
# libxenlight); the UUID as xl shows it. Both sides unlink it before unlocking: none is left.
UUID=$(xl list -v $G | awk 'NR == 2 { print $7 }')
WANT="/var/lib/xen/userdata-l.$D.$UUID.qmp-socket-lock"
USED=$(sed -n 's/^dm-pause domain=.* lock=//p' "$W/dm-pause.log" | tail -n1)
[ "$USED" = "$WANT" ] || lab_fail "romulus-xen locked '$USED', libxl locks '$WANT'"
LEFT=$(ls /var/lib/xen/userdata-l.$D.*.qmp-socket-lock 2>/dev/null)
[ -z "$LEFT" ] || lab_fail "a QMP lock file was left behind: $LEFT"
lab_note "QMP lock: $USED (libxl's name for guest $G), unlinked after use as libxl does"

# The guest counts on: its vCPUs and its devices run again
lab_wait_counter "$SERIAL" $((BEFORE + 3)) 120 || lab_fail "$G stopped counting after the rounds (last $(lab_counter_last "$SERIAL"), before $BEFORE)"
lab_note "$G counted on: $BEFORE before the rounds, $(lab_counter_last "$SERIAL") after"

# ---- 4. the Xen driver checkpoints the HVM guest (romulus-xen record-stream: the driver under
# an in-process session, every epoch acked at once): the guest suspends through its PV
# drivers, the device model is stopped and saved inside every pause and continued before the
# guest, QEMU's dirty log is on for the session, and every epoch carries one device state.
N=5
BEFORE=$(lab_counter_last "$SERIAL")
"$TOOL" record-stream --domain $G --out "$W/hvm.stream" --checkpoints $N --interval 200 >"$W/record.log" 2>&1 ||
  lab_fail "romulus-xen record-stream of HVM guest $G: $(grep -v '^ *$' "$W/record.log" | tail -n 2 | tr '\n' ' ')"
lab_evidence "$W/record.log"
grep -q "romulus-xen: $N epochs, $N with a device model state" "$W/record.log" ||
  lab_fail "not every checkpoint carried the device model's state: $(grep 'device model state' "$W/record.log")"
lab_note "record-stream: $(sed -n 's/^romulus-xen: \([0-9]* epochs, .*\)/\1/p' "$W/record.log")"
grep '^romulus-xen: checkpoint ' "$W/record.log" | sed 's/^romulus-xen: //' | while read -r l; do lab_note "record-stream: $l"; done
DMSAVE=$(sed -n 's/.*dm_save_us=\([0-9]*\).*/\1/p' "$W/record.log" | sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}')
lab_figure "record_stream_checkpoints=$N dm_save_median_us=${DMSAVE:-none} dm_state_bytes=$(sed -n 's/.*dm_state_bytes=\([0-9]*\).*/\1/p' "$W/record.log" | tail -n1)"
rm -f "$W/hvm.stream"
xl qemu-monitor-command $G "info status" >"$W/xl-status.txt" 2>&1 && grep -q "running" "$W/xl-status.txt" ||
  lab_fail "QEMU is not running after the checkpoints: $(cat "$W/xl-status.txt")"
LEFT=$(ls /var/lib/xen/userdata-l.$D.*.qmp-socket-lock 2>/dev/null)
[ -z "$LEFT" ] || lab_fail "a QMP lock file was left behind by the driver: $LEFT"
lab_wait_counter "$SERIAL" $((BEFORE + 3)) 120 || lab_fail "$G stopped counting after $N checkpoints (last $(lab_counter_last "$SERIAL"), before $BEFORE)"
lab_note "$G counted on after $N checkpoints: $BEFORE before, $(lab_counter_last "$SERIAL") after"

# ---- 4b. a hung device model (QEMU SIGSTOPped, its socket still queueing connections): the
# driver's session fails by its deadline with the reason (QEMU's greeting never came, QEMU's
# dirty log could not be switched on), never suspends the guest, and once QEMU runs again the
# guest counts on.
QPID=$(xenstore-read "/local/domain/$D/image/device-model-pid" 2>/dev/null)
[ -n "$QPID" ] || QPID=$(lab_pids_by_arg "-xen-domid $D " | head -n1)
[ -n "$QPID" ] || lab_fail "no device model pid for domain $D"
BEFORE=$(lab_counter_last "$SERIAL")
kill -STOP "$QPID" || lab_fail "SIGSTOP $QPID"
T3=$(lab_now)
"$TOOL" record-stream --domain $G --out "$W/hung.stream" --checkpoints 3 --interval 200 >"$W/hung.log" 2>&1 && {
  kill -CONT "$QPID"; lab_fail "record-stream succeeded with the device model stopped"; }
STATE=$(xl list $G | awk 'NR == 2 { print $5 }')
kill -CONT "$QPID"
lab_evidence "$W/hung.log"
grep -q "dirty log on for HVM guest $G" "$W/hung.log" ||
  lab_fail "the hung device model's failure does not say what failed: $(grep -v '^ *$' "$W/hung.log" | tail -n 1)"
case $STATE in *s*) lab_fail "$G was left suspended ($STATE) by a session that never checkpointed" ;; esac
lab_note "hung device model: record-stream failed after $(lab_elapsed "$T3") s: $(grep -v '^ *$' "$W/hung.log" | tail -n 1 | cut -c1-200)"
rm -f "$W/hung.stream"
lab_wait_counter "$SERIAL" $((BEFORE + 3)) 120 || lab_fail "$G stopped counting after QEMU was continued (last $(lab_counter_last "$SERIAL"))"
LEFT=$(ls /var/lib/xen/userdata-l.$D.*.qmp-socket-lock 2>/dev/null)
[ -z "$LEFT" ] || lab_fail "a QMP lock file was left behind after the hung device model: $LEFT"
lab_note "hung device model: $G ran on ($STATE), counts on after SIGCONT ($(lab_counter_last "$SERIAL"))"

# ---- 5. replicate to a backup that cannot resume an HVM guest yet (docs/DEVICE-MODEL.md §3):
# the backup refuses the replica and says why, the primary hears it, no replica domain is
# left, the guest runs on.
command -v romulus >/dev/null 2>&1 || lab_fail "no romulus in dom0 (scripts/xen-lab --romulus PATH): step 5 needs it"
if :; then
  PORT=7350
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/psk"
  chmod 600 "$W/psk"
  romulus restore --xen --no-fence --listen "127.0.0.1:$PORT" --psk-file "$W/psk" --failover-timeout 2s \
    --events-json "$W/events.jsonl" >"$W/backup.log" 2>&1 &
  BP=$!
  lab_evidence "$W/backup.log" "$W/primary.log"
  lab_wait_listening "$W/backup.log" $BP
  romulus replicate --domain $G --to "127.0.0.1:$PORT" --psk-file "$W/psk" --interval 200ms \
    --ack-timeout 15s >"$W/primary.log" 2>&1 &
  RP=$!
  T2=$(lab_now)
  until grep -q "cannot resume" "$W/primary.log" || ! kill -0 $RP 2>/dev/null; do
    [ "$(lab_elapsed "$T2" | cut -d. -f1)" -ge 300 ] && lab_fail "the primary never heard the backup's refusal within 300 s"
    sleep 0.5
  done
  grep -q "cannot resume" "$W/primary.log" ||
    lab_fail "the primary ended without the backup's reason: $(grep -v '^ *$' "$W/primary.log" | tail -n 2 | tr '\n' ' ')"
  lab_note "primary: $(grep -m1 'cannot resume' "$W/primary.log" | cut -c1-240)"
  kill $RP 2>/dev/null; wait $RP 2>/dev/null
  kill $BP 2>/dev/null; wait $BP 2>/dev/null
  xl list | grep -q -- "$G--" && lab_fail "a replica domain is left: $(xl list | grep -- "$G--")"
  BEFORE=$(lab_counter_last "$SERIAL")
  lab_wait_counter "$SERIAL" $((BEFORE + 2)) 120 || lab_fail "$G stopped counting after the refused replication"
  xl qemu-monitor-command $G "info status" >"$W/xl-status.txt" 2>&1 && grep -q "running" "$W/xl-status.txt" ||
    lab_fail "QEMU is not running after the refused replication: $(cat "$W/xl-status.txt")"
  lab_note "refused replication: no replica left, QEMU running, $G counting ($(lab_counter_last "$SERIAL"))"
fi
lab_summary "hvm device model: 21 pauses, $(echo "$SUM" | sed -n 's/.*begin_median_ms=\([0-9.]*\).*/stop+save median \1 ms/p'); $N checkpoints by the driver, each with its device state"
xl destroy $G >/dev/null 2>&1
exit 0
