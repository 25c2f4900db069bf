#!/bin/sh
#@ title: an HVM guest's device model through checkpoint pauses: libxl's QMP lock, stop, state into a passed descriptor, cont; the guest runs on
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
#     its vCPUs and its devices were continued every time.
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
lab_summary "hvm device model: 21 pauses, $(echo "$SUM" | sed -n 's/.*begin_median_ms=\([0-9.]*\).*/stop+save median \1 ms/p')"
xl destroy $G >/dev/null 2>&1
exit 0
