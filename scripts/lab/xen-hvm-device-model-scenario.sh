#!/bin/sh
#@ title: an HVM guest's device model through checkpoint pauses (libxl's QMP lock, stop, state into a passed descriptor, cont) and the Xen driver's checkpoints, each with its device state; protected by romulus and failed over: the backup starts the device model from the checkpoint and the guest counts on; kill drills s2 and c resume from exactly the right epoch; a planned switchover with --reverse; a lost write (the primary's store full) and a disk that hangs QEMU's stop (the primary's store frozen): each time the guest relinquished to the backup
#@ runs: romulus
#@ guests: hvm
#@ order: 5
#@ skip-if: LAB_NO_HVM_DEVICE_MODEL
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
#  5. romulus replicate to romulus restore --xen, then the primary dies (replicator killed,
#     guest destroyed): the backup starts a device model from the last committed epoch's
#     device state and resumes the guest, which counts on from that checkpoint on the serial
#     port of the backup's QEMU; `xl` sees that QEMU running.
#  6. the failed-over guest protected again, to a backup whose device model fails its first
#     start: the activation fails and says why, the replica is kept paused and the backup holds;
#     `romulus ctl failover` retries and the guest counts on from the last committed epoch;
#  7. kill drills on that guest (s2: suspended at the kill, c: EPOCH_END unacked): the backup
#     resumes from exactly epoch K-1 (s2) and K (c), memory and device state of that epoch;
#  8. a planned switchover with --reverse: the backup activates the final epoch, the guest
#     counts on from where the primary stopped, is replicated back, and the old host's backup
#     takes over when the new primary dies;
#  9. an HVM guest without PV drivers (its kernel booted with `nopv`: HVM_PARAM_CALLBACK_IRQ
#     stays 0, so control/shutdown goes unanswered): the primary has the hypervisor suspend it
#     at every checkpoint (xc_domain_shutdown, libxl's way) and resumes it without touching its
#     registers; the guest counts on through the checkpoints, and the backup resumes it from
#     the last committed epoch when the primary dies. Before that, a replicator killed at s2
#     leaves it suspended by the hypervisor, and the next one resumes it the same way (fast=0).
#     This guest has xl's usual devices for an OS without PV drivers: a VGA adapter with a
#     VNC server and an emulated e1000 NIC (its only network): the output it sends on the
#     NIC's tap is held until the ack (none reaches dom0 while the backup is stopped, all of
#     it once the backup runs), and the backup's device model recreates adapter and NIC
#     (its own tap, attached by the hotplug script) so the failed-over guest answers ping.
#     Its data disk hda is replicated (disk-export + nbd-client, --disk-tap): libxl gives it an
#     emulated IDE slot too, which this guest uses (ata_piix, /dev/sda), writing a numbered,
#     checksummed record every 300 ms; the backup's QEMU gets the backup's copy in the same
#     slot, and after failover the copy's records end where the resumed guest's memory says.
# 10. a lost write: a nopv guest whose IDE disk's store (behind the export) runs out of room
#     while it is protected. The write-back of QEMU's page cache fails; the replicator hears
#     of it inside the next pause (its own descriptor of /dev/nbd1), never commits that epoch,
#     keeps the guest suspended for good and hands it to the backup, which resumes the epoch
#     before; the guest counts and writes on there; a second replicator refuses the kept copy.
# 11. a disk that hangs: the same kind of guest, its store on an ext4 that dom0 freezes while it
#     is protected. The guest's next write waits in QEMU, so QEMU's stop at the next pause
#     waits for it and answers nothing, not even the cont: the replicator finds the device
#     model unresponsive by its deadline, never commits that epoch, keeps the guest suspended
#     for good and hands it to the backup, which resumes the epoch before; once thawed, the
#     guest counts and writes on there, its copy's records without a hole.
. /lab/dom0-lib.sh
W=$LAB_WORK
G=guest1
TOOL=""
for t in /usr/bin/romulus-xen /lab/extra/romulus-xen; do [ -x "$t" ] && TOOL=$t && break; done
[ -n "$TOOL" ] || lab_fail "no romulus-xen (scripts/xen-lab --extra build/<tree>/xen/romulus-xen)"

SERIAL=$(lab_guest_serial $G)
rm -f "$SERIAL"
T0=$(lab_now)
# xl's default NIC for an HVM guest (type=ioemu: a PV vif and an emulated rtl8139 on the tap
# vifD.0-emu). The guest's PV drivers unplug the emulated one at boot, so its device state
# lacks it; the backup's device model has it all the same, as libxl's on a migration target.
lab_evidence "/var/log/xen/qemu-dm-$G.log"
LAB_GUEST_VIF="type=ioemu,mac=00:16:3e:4c:00:01,script=/lab/vif-lab" \
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
lab_evidence "$W/record.log"
"$TOOL" record-stream --domain $G --out "$W/hvm.stream" --checkpoints $N --interval 200 >"$W/record.log" 2>&1 ||
  lab_fail "romulus-xen record-stream of HVM guest $G: $(grep -v '^ *$' "$W/record.log" | tail -n 2 | tr '\n' ' ')"
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
# driver refuses by its deadline with the reason (QEMU's greeting never came when the driver
# asked its release, before any session), never suspends the guest, and once QEMU runs again
# the guest counts on.
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
grep -q "cannot protect HVM guest $G: asking its device model's release: .*QEMU's greeting" "$W/hung.log" ||
  lab_fail "the hung device model's failure does not say what failed: $(grep -v '^ *$' "$W/hung.log" | tail -n 1)"
case $STATE in *s*) lab_fail "$G was left suspended ($STATE) by a session that never checkpointed" ;; esac
lab_note "hung device model: record-stream failed after $(lab_elapsed "$T3") s: $(grep -v '^ *$' "$W/hung.log" | tail -n 1 | cut -c1-200)"
rm -f "$W/hung.stream"
lab_wait_counter "$SERIAL" $((BEFORE + 3)) 120 || lab_fail "$G stopped counting after QEMU was continued (last $(lab_counter_last "$SERIAL"))"
LEFT=$(ls /var/lib/xen/userdata-l.$D.*.qmp-socket-lock 2>/dev/null)
[ -z "$LEFT" ] || lab_fail "a QMP lock file was left behind after the hung device model: $LEFT"
lab_note "hung device model: $G ran on ($STATE), counts on after SIGCONT ($(lab_counter_last "$SERIAL"))"

# ---- 5. protect and fail over (docs/DEVICE-MODEL.md §3): romulus replicate to romulus
# restore --xen; once 5 epochs were acked, the replicator is killed (-9) and the guest
# destroyed (its device model with it: the primary host dies). The backup starts a device
# model of its own from the last committed epoch's device state, then the guest: it counts on
# from the last committed checkpoint, through its emulated serial port (the backup's QEMU
# writes it to its own file), with that QEMU running.
command -v romulus >/dev/null 2>&1 || lab_fail "no romulus in dom0 (scripts/xen-lab --romulus PATH): step 5 needs it"
PORT=7350
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/psk"
chmod 600 "$W/psk"
# hvm_backup PORT LOG [restore args...]: a backup for this guest (its kernel from the directory
# the lab's guest boots it from), listening; its pid in BP.
hvm_backup() {
  _port=$1 _log=$2; shift 2
  romulus restore --xen --no-fence --listen "127.0.0.1:$_port" --psk-file "$W/psk" --failover-timeout 2s \
    --guest-kernel-dir "$(dirname "$LAB_DOMU_KERNEL")" "$@" >"$_log" 2>&1 &
  BP=$!
  lab_evidence "$_log"
  lab_wait_listening "$_log" $BP
}
# hvm_serial LOG: the file the device model a backup started writes the guest's serial port
# into (from the backup's log; "" if it said none).
hvm_serial() { sed -n 's/.*serial port into \([^ ,]*\).*/\1/p' "$1" | tail -n 1; }
# hda_export WHAT IMG N NBD: a disk export of the image IMG named hda (its sockets and log
# $W/guestN-hda.*, $W/exportN.log) behind the kernel NBD device NBD; its pid in EP, its tap
# socket in TAP.
hda_export() {
  _what=$1 _img=$2 _n=$3 _nbd=$4
  TAP=$W/guest$_n-hda.tap
  romulus disk-export --store "$_img" --name hda --nbd-socket "$W/guest$_n-hda.nbd" --tap-socket "$TAP" \
    >"$W/export$_n.log" 2>&1 &
  EP=$!
  lab_evidence "$W/export$_n.log"
  i=0; until grep -q ready "$W/export$_n.log"; do i=$((i+1)); [ $i -le 300 ] || lab_fail "$_what: the disk export is not ready"; sleep 0.1; done
  nbd-client -unix "$W/guest$_n-hda.nbd" "$_nbd" -N hda >"$W/nbdc$_n.log" 2>&1 || lab_fail "$_what: nbd-client: $(cat "$W/nbdc$_n.log")"
  lab_nbd_requests "$_nbd"
}
# dr FILE: the last DISKREC a console shows (0: none).
dr() { _v=$(tr -d '\r' <"$1" 2>/dev/null | sed -n 's/.*DISKREC \([0-9][0-9]*\).*/\1/p' | tail -n1); echo "${_v:-0}"; }
# copy_records WHAT DOMID CONSOLE DISKDIR LASTREC: the resumed copy DOMID writes 3 records past
# the primary's last LASTREC through its IDE disk, its first at most LASTREC + 1, and sees no
# disk error; then it is destroyed (its QEMU with it: nothing writes the image any more) and
# the backup's copy in DISKDIR must end where its memory says: the last record its console
# printed, or one more in flight (the console may lag the image: read again for up to 5 s).
# Sets COPY_FIRST, COPY_LAST and COPY_OUT (labdisk check's verdict).
copy_records() {
  _what=$1 _dom=$2 _con=$3 _dir=$4 _last=$5
  i=0; until [ "$(dr "$_con")" -ge $((_last + 3)) ]; do
    i=$((i+1)); [ $i -le 600 ] || lab_fail "$_what: the resumed guest does not write on through its IDE disk (last $(dr "$_con"), primary $_last): $(grep -m1 DISKERR "$_con")"
    sleep 0.2
  done
  COPY_FIRST=$(tr -d '\r' <"$_con" | sed -n 's/.*DISKREC \([0-9][0-9]*\).*/\1/p' | head -n1)
  [ -n "$COPY_FIRST" ] && [ "$COPY_FIRST" -le $((_last + 1)) ] || lab_fail "$_what: the resumed guest's first record $COPY_FIRST is beyond the primary's last $_last + 1"
  ! grep -q DISKERR "$_con" || lab_fail "$_what: the resumed guest saw a disk error: $(grep -m1 DISKERR "$_con")"
  xl destroy "$_dom" >/dev/null 2>&1
  i=0; while xl list "$_dom" >/dev/null 2>&1; do i=$((i+1)); [ $i -le 150 ] || lab_fail "$_what: domain $_dom does not go away"; sleep 0.2; done
  COPY_LAST=$(dr "$_con")
  _imgs=$(ls "$_dir"/*.img 2>/dev/null)
  [ "$(echo "$_imgs" | grep -c .)" -eq 1 ] || lab_fail "$_what: images in the backup's disk dir: '$_imgs'"
  COPY_OUT=$(labdisk check "$_imgs" 2>&1) || lab_fail "$_what: the backup's copy: $COPY_OUT"
  _cl=$(echo "$COPY_OUT" | sed -n 's/.*last=\([0-9]*\).*/\1/p')
  i=0
  while [ "$_cl" -gt $((COPY_LAST + 1)) ] && [ $i -lt 25 ]; do sleep 0.2; COPY_LAST=$(dr "$_con"); i=$((i + 1)); done
  case $_cl in "$COPY_LAST"|"$((COPY_LAST + 1))") ;; *) lab_fail "$_what: the backup's copy ends at record $_cl, the resumed guest's last is $COPY_LAST" ;; esac
}
# protect_with_disk WHAT N GUEST TAP: a backup for GUEST on the next port (the replica named
# GUEST-copy, its disks in $W/disksN, its events $W/eventsN.jsonl; its pid in BP), and GUEST
# replicated to it every 200 ms through its disk export's TAP (log $W/primaryN.log, stats
# $W/statsN.jsonl; its pid in RP), until 5 epochs are acked and the disk is copied.
protect_with_disk() {
  _what=$1 _n=$2 _g=$3 _tap=$4
  PORT=$((PORT + 1))
  mkdir -p "$W/disks$_n"
  hvm_backup $PORT "$W/backup$_n.log" --domain-name "$_g-copy" --events-json "$W/events$_n.jsonl" --disk-dir "$W/disks$_n"
  _t=$(lab_now)
  romulus replicate --domain "$_g" --disk-tap "$_tap" --to "127.0.0.1:$PORT" --psk-file "$W/psk" --interval 200ms \
    --ack-timeout 15s --stats-json "$W/stats$_n.jsonl" >"$W/primary$_n.log" 2>&1 &
  RP=$!
  lab_evidence "$W/primary$_n.log"
  until [ "$(rj_count "$W/stats$_n.jsonl" acked true)" -ge 5 ] 2>/dev/null && grep -q "copy to the backup complete with epoch" "$W/primary$_n.log"; do
    kill -0 $RP 2>/dev/null || lab_fail "$_what: the replicator exited before 5 acked epochs: $(grep -v '^ *$' "$W/primary$_n.log" | tail -n 1 | cut -c1-240)"
    [ "$(lab_elapsed "$_t" | cut -d. -f1)" -lt 900 ] || lab_fail "$_what: fewer than 5 acked epochs, or the disk never copied"
    sleep 0.2
  done
}
# resumed_copy WHAT N GUEST CONSOLE: after the handover of GUEST (console CONSOLE) to the backup
# of protect_with_disk N, its copy GUEST-copy counts on from the primary's last counter + 1 at
# most, on the serial port of the backup's device model. Sets RC_LAST, RC_LASTREC (the primary's
# last counter and disk record), RC_SERIAL, RC_FIRST (the copy's console, its first counter) and
# RC_DOM (the copy's domid).
resumed_copy() {
  _what=$1 _n=$2 _g=$3 _con=$4
  RC_LAST=$(lab_counter_last "$_con")
  RC_LASTREC=$(dr "$_con")
  RC_SERIAL=$(hvm_serial "$W/backup$_n.log")
  [ -n "$RC_SERIAL" ] && [ "$RC_SERIAL" != "$_con" ] || lab_fail "$_what: the backup's device model writes '$RC_SERIAL'"
  lab_evidence "$RC_SERIAL"
  lab_wait_counter "$RC_SERIAL" $((RC_LAST + 2)) 300 ||
    lab_fail "$_what: the resumed guest does not count on (last $(lab_counter_last "$RC_SERIAL"), primary was $RC_LAST)"
  RC_FIRST=$(lab_counter_first "$RC_SERIAL")
  [ "$RC_FIRST" -gt 1 ] && [ "$RC_FIRST" -le $((RC_LAST + 1)) ] ||
    lab_fail "$_what: the copy's counter began at $RC_FIRST, the primary's ended at $RC_LAST"
  RC_DOM=$(xl domid "$_g-copy" 2>/dev/null)
  [ -n "$RC_DOM" ] || { xl list; lab_fail "$_what: no $_g-copy in xl list"; }
}
# hvm_replicate PORT LOG [replicate args...]: guest $G replicated to the backup at PORT every
# 200 ms; its pid in RP.
hvm_replicate() {
  _port=$1 _log=$2; shift 2
  romulus replicate --domain $G --to "127.0.0.1:$_port" --psk-file "$W/psk" --interval 200ms \
    --ack-timeout 15s "$@" >"$_log" 2>&1 &
  RP=$!
  lab_evidence "$_log"
}
# The lab's guest boots its kernel directly (kernel= in its config): the backup's device model
# loads the same file, from a directory the backup allows.
lab_evidence "/var/log/xen/qemu-dm-$G--incoming.log"
hvm_backup $PORT "$W/backup.log" --events-json "$W/events.jsonl"
hvm_replicate $PORT "$W/primary.log" --stats-json "$W/stats.jsonl" --events-json "$W/pevents.jsonl"
T2=$(lab_now)
until [ "$(rj_count "$W/stats.jsonl" acked true)" -ge 5 ] 2>/dev/null; do
  kill -0 $RP 2>/dev/null || lab_fail "the replicator exited before 5 acked epochs: $(grep -v '^ *$' "$W/primary.log" | tail -n 1 | cut -c1-240)"
  kill -0 $BP 2>/dev/null || lab_fail "the backup exited before 5 acked epochs: $(grep -v '^ *$' "$W/backup.log" | tail -n 1 | cut -c1-240)"
  [ "$(lab_elapsed "$T2" | cut -d. -f1)" -ge 600 ] && lab_fail "fewer than 5 acked epochs after 600 s"
  sleep 0.5
done
lab_note "5 epochs acked $(lab_elapsed "$T2") s after replicate started"
# The backup compared the QEMU releases (the primary's from its QMP greeting, its own from
# --version): no warning that it could not.
! grep -q "cannot tell the release\|names no QEMU release" "$W/backup.log" "$W/primary.log" ||
  lab_fail "the QEMU releases were not compared: $(grep -h "cannot tell the release\|names no QEMU release" "$W/backup.log" "$W/primary.log" | head -n 1 | cut -c1-240)"
LAST_PRIMARY=$(lab_counter_last "$SERIAL")
kill -9 $RP 2>/dev/null
TK=$(lab_now)
xl destroy $G >/dev/null 2>&1
LAST_ACKED=$(rj_last_acked "$W/stats.jsonl")
DMSAVE=$(rj_csv "$W/stats.jsonl" acked true dm_save_us | sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}')
lab_wait_failover "$W/events.jsonl" "$W/backup.log"
FO_EPOCH=$(rj_get "$LAB_FO" last_committed_epoch)
[ -n "$FO_EPOCH" ] && [ "$FO_EPOCH" -ge "$LAST_ACKED" ] && [ "$FO_EPOCH" -le $((LAST_ACKED + 1)) ] ||
  lab_fail "the backup resumed from epoch '$FO_EPOCH'; the primary's last acked epoch was $LAST_ACKED"
RSERIAL=$(hvm_serial "$W/backup.log")
[ -n "$RSERIAL" ] || lab_fail "the backup never said where its device model writes the serial port"
lab_evidence "$RSERIAL"
lab_wait_counter "$RSERIAL" $((LAST_PRIMARY + 2)) 300 ||
  lab_fail "the failed-over HVM guest does not count on (its serial port: last $(lab_counter_last "$RSERIAL"), primary was $LAST_PRIMARY)"
RESUMED=$(lab_elapsed "$TK")
FIRST_BACKUP=$(lab_counter_first "$RSERIAL")
[ "$FIRST_BACKUP" -gt 1 ] || lab_fail "the failed-over guest restarted its counter (first $FIRST_BACKUP)"
[ "$FIRST_BACKUP" -le $((LAST_PRIMARY + 1)) ] || lab_fail "the failed-over guest skipped ahead ($FIRST_BACKUP > $LAST_PRIMARY + 1)"
i=0
until xl list 2>/dev/null | awk 'NR>1 {print $1}' | grep -qx $G; do
  i=$((i+1)); [ $i -le 300 ] || { xl list; lab_fail "the backup domain was not renamed $G"; }
  sleep 0.1
done
xl qemu-monitor-command $G "info status" >"$W/xl-status.txt" 2>&1 && grep -q "running" "$W/xl-status.txt" ||
  lab_fail "the failed-over guest's device model is not running: $(cat "$W/xl-status.txt")"
# Its emulated NIC came with the facts (the PV drivers had unplugged it on the primary).
tr '\0' ' ' </proc/"$(xenstore-read /local/domain/$(xl domid $G)/image/device-model-pid)"/cmdline 2>/dev/null |
  grep -q -- "-device rtl8139,id=nic0,netdev=net0,mac=00:16:3e:4c:00:01" ||
  lab_fail "the failed-over guest's device model has no emulated rtl8139 (the primary's had one)"
DMSTART=$(sed -n "s/.*runs the checkpoint's devices (\([0-9]*\) ms).*/\1/p" "$W/backup.log" | tail -n 1)
lab_note "failover from epoch $FO_EPOCH (primary's last acked $LAST_ACKED); counter $LAST_PRIMARY -> $FIRST_BACKUP on the backup's serial port $RSERIAL; device model started in ${DMSTART:-?} ms; counting after $RESUMED s"
lab_figure "hvm_failover_s=$RESUMED dm_start_ms=${DMSTART:-none} failover_primary_counter=$LAST_PRIMARY failover_backup_min_counter=$FIRST_BACKUP replicate_dm_save_median_us=${DMSAVE:-none}"
kill $BP 2>/dev/null; wait $BP 2>/dev/null

# ---- 6. a device model that fails at failover (first law: the checkpoint is never lost to a
# failed activation). The failed-over guest is protected again, to a backup whose device model
# refuses to start once. At failover the activation fails and says why; the backup keeps the
# checkpoint (its replica domain paused, the backup serving) and holds; `romulus ctl failover`
# retries, the device model starts, and the guest counts on from that checkpoint.
cat >"$W/flaky-qemu" <<EOF
#!/bin/sh
# The backup asks its device model's release at session start (compared with the primary's).
[ "\$1" = --version ] && exec /usr/libexec/xen-qemu-system-i386 --version
if [ ! -e "$W/flaky-once" ]; then
  : >"$W/flaky-once"
  echo "flaky-qemu: refusing to start, once (a lab fault)" >&2
  exit 1
fi
exec /usr/libexec/xen-qemu-system-i386 "\$@"
EOF
chmod +x "$W/flaky-qemu"
rm -f "$W/flaky-once" "$W/events6.jsonl" "$W/stats6.jsonl"
lab_evidence "$W/events6.jsonl"
hvm_backup $PORT "$W/backup6.log" --device-model "$W/flaky-qemu" --control-socket "$W/ctl6.sock" \
  --events-json "$W/events6.jsonl"
hvm_replicate $PORT "$W/primary6.log" --stats-json "$W/stats6.jsonl"
T6=$(lab_now)
until [ "$(rj_count "$W/stats6.jsonl" acked true)" -ge 3 ] 2>/dev/null; do
  kill -0 $RP 2>/dev/null || lab_fail "protecting the failed-over guest: the replicator exited: $(grep -v '^ *$' "$W/primary6.log" | tail -n 1 | cut -c1-240)"
  [ "$(lab_elapsed "$T6" | cut -d. -f1)" -ge 600 ] && lab_fail "protecting the failed-over guest: fewer than 3 acked epochs after 600 s"
  sleep 0.5
done
LAST6=$(lab_counter_last "$RSERIAL")
kill -9 $RP 2>/dev/null
xl destroy $G >/dev/null 2>&1
LAST_ACKED6=$(rj_last_acked "$W/stats6.jsonl")
FO6=$(rj_wait_event "$W/events6.jsonl" failover 120) || lab_fail "the backup never tried to fail over"
[ "$(rj_get "$FO6" activated)" = false ] || lab_fail "the flaky device model's first start did not fail the activation: $FO6"
case "$(rj_get "$FO6" reason)" in *flaky-qemu*) ;; *) lab_fail "the failed activation does not say why: $FO6" ;; esac
kill -0 $BP 2>/dev/null || lab_fail "the backup exited after a failed activation: its checkpoint is gone"
STATE6=$(xl list | awk -v n="$G--incoming" '$1 == n { print $5 }')
case $STATE6 in *p*) ;; *) xl list; lab_fail "the replica $G--incoming is not kept paused after the failed activation ('$STATE6')" ;; esac
rj_ctl "$W/ctl6.sock" status >/dev/null || lab_fail "ctl status after the failed activation: $RJ_ERROR"
[ "$(rj_get "$RJ_REPLY" state)" = holding ] && [ "$(rj_get "$RJ_REPLY" decision)" = hold ] ||
  lab_fail "the backup is not holding after the failed activation: $RJ_REPLY"
case "$(rj_get "$RJ_REPLY" decision_reason)" in "activating checkpoint"*"ctl failover"*) ;; *) lab_fail "the backup does not say it holds the checkpoint after a failed activation: $RJ_REPLY" ;; esac
# No copy of the guest runs anywhere: the primary was destroyed, the replica is paused.
RUNNING6=$(xl list | awk -v g="$G" 'NR > 1 && index($1, g) == 1 && $5 !~ /p/ { print $1 }')
[ -z "$RUNNING6" ] || lab_fail "a copy of $G runs while the backup holds: $RUNNING6"
lab_note "failed activation: $(rj_get "$FO6" reason | cut -c1-200); replica $G--incoming kept ($STATE6), backup holding"
rj_ctl "$W/ctl6.sock" failover >/dev/null || lab_fail "ctl failover (the retry): $RJ_ERROR"
[ "$(rj_get "$RJ_REPLY" activated)" = true ] || lab_fail "ctl failover did not activate: $RJ_REPLY"
EPOCH6=$(rj_get "$RJ_REPLY" epoch)
[ "$EPOCH6" -ge "$LAST_ACKED6" ] && [ "$EPOCH6" -le $((LAST_ACKED6 + 1)) ] ||
  lab_fail "the retry resumed epoch $EPOCH6; the primary's last acked was $LAST_ACKED6"
lab_wait_counter "$RSERIAL" $((LAST6 + 2)) 300 ||
  lab_fail "after the retried activation the guest does not count on (last $(lab_counter_last "$RSERIAL"), primary was $LAST6)"
FIRST6=$(lab_counter_first "$RSERIAL")
[ "$FIRST6" -gt 1 ] && [ "$FIRST6" -le $((LAST6 + 1)) ] || lab_fail "after the retry the counter went from $LAST6 to $FIRST6"
lab_note "ctl failover retried: epoch $EPOCH6 (primary's last acked $LAST_ACKED6), counter $LAST6 -> $FIRST6"
kill $BP 2>/dev/null; wait $BP 2>/dev/null

# ---- 7. kill drills on the HVM guest (the kill-drill scenario's checks, on the guest that
# runs now, so no new boot): `replicate --kill-at PHASE:K` SIGKILLs the primary at that phase,
# the primary host dies with it, and the backup must resume from exactly the right epoch, its
# memory and its device model's state of that one epoch: K-1 for s2 (the guest and its device
# model suspended at the kill, epoch K never completed), K for c (EPOCH_END K written, not
# acked: the backup commits it).
# Each drill's backup has its own replica name, so its device model writes its own serial file
# (the primary's last line and the copy's first are read without a race).
K7=4
DRILLS=""
CUR_SERIAL=$RSERIAL
for PH in s2 c; do
  case $PH in c) WANT=$K7 ;; *) WANT=$((K7 - 1)) ;; esac
  PORT=$((PORT + 1))
  rm -f "$W/events7-$PH.jsonl" "$W/stats7-$PH.jsonl"
  lab_evidence "$W/events7-$PH.jsonl"
  hvm_backup $PORT "$W/backup7-$PH.log" --domain-name "$G-$PH" --events-json "$W/events7-$PH.jsonl"
  hvm_replicate $PORT "$W/primary7-$PH.log" --kill-at "$PH:$K7" --stats-json "$W/stats7-$PH.jsonl"
  lab_wait_exit $RP 600 "$PH: the primary never reached epoch $K7"
  RC=$LAB_RC
  TK=$(lab_now)
  LAST7=$(lab_counter_last "$CUR_SERIAL")
  xl destroy $G >/dev/null 2>&1
  [ "$RC" -eq 137 ] || lab_fail "$PH: the primary exited $RC, not by SIGKILL: $(grep -v '^ *$' "$W/primary7-$PH.log" | tail -n 1 | cut -c1-240)"
  grep -q "drill: killing the primary at .* of epoch $K7" "$W/primary7-$PH.log" || lab_fail "$PH: no kill-point line for epoch $K7"
  LAST_ACKED7=$(rj_last_acked "$W/stats7-$PH.jsonl")
  # The primary never saw an ack beyond K-1 (epoch K never completed, or its ack never came);
  # it may have seen less: the ack of K-1 can still be on its way when epoch K is cut (on a
  # loaded host it was). What the backup resumes is checked exactly below.
  [ -n "$LAST_ACKED7" ] && [ "$LAST_ACKED7" -le $((K7 - 1)) ] ||
    lab_fail "$PH: the primary's last acked epoch is '$LAST_ACKED7', beyond $((K7 - 1))"
  lab_wait_failover "$W/events7-$PH.jsonl" "$W/backup7-$PH.log"
  FO7=$(rj_get "$LAB_FO" last_committed_epoch)
  [ "$FO7" = "$WANT" ] || lab_fail "$PH: the backup resumed from epoch $FO7, want $WANT"
  NEW_SERIAL=$(hvm_serial "$W/backup7-$PH.log")
  [ -n "$NEW_SERIAL" ] && [ "$NEW_SERIAL" != "$CUR_SERIAL" ] || lab_fail "$PH: the backup's device model writes '$NEW_SERIAL'"
  lab_evidence "$NEW_SERIAL"
  lab_wait_counter "$NEW_SERIAL" $((LAST7 + 2)) 300 ||
    lab_fail "$PH: the resumed HVM guest does not count on (last $(lab_counter_last "$NEW_SERIAL"), primary was $LAST7)"
  FIRST7=$(lab_counter_first "$NEW_SERIAL")
  CUR_SERIAL=$NEW_SERIAL
  [ "$FIRST7" -gt 1 ] && [ "$FIRST7" -le $((LAST7 + 1)) ] || lab_fail "$PH: the counter went from $LAST7 to $FIRST7"
  i=0
  until xl list 2>/dev/null | awk 'NR>1 {print $1}' | grep -qx $G; do
    i=$((i+1)); [ $i -le 300 ] || { xl list; lab_fail "$PH: the backup domain was not renamed $G"; }
    sleep 0.1
  done
  lab_note "$PH: killed at epoch $K7 (primary last acked $LAST_ACKED7), backup resumed from epoch $FO7 with its device state; counter $LAST7 -> $FIRST7 after $(lab_elapsed "$TK") s"
  lab_figure "hvm_phase=$PH kill_epoch=$K7 resumed_epoch=$FO7 failover_to_output_s=$(lab_elapsed "$TK")"
  DRILLS="$DRILLS $PH:$FO7"
  kill $BP 2>/dev/null; wait $BP 2>/dev/null
done

# ---- 8. a planned switchover of the HVM guest, with --reverse (the kill-drill scenario's
# "switchover", on the guest that runs now): once 3 epochs are acked, `romulus switchover`
# hands the guest over: the primary exits 0 leaving its domain suspended and marked (a new
# replicate --domain of it refuses), the backup starts its device model from the final epoch's
# device state and the guest counts on from exactly where the primary's stopped, then it is
# replicated back to the old host's backup, which takes over when the new primary dies too.
# Each backup has its own replica name (--domain-name), so each device model writes its own
# serial file: the primary's last line and each copy's first are read without a race.
PORT=$((PORT + 1))
RPORT=$((PORT + 50))
rm -f "$W/events8.jsonl" "$W/events8r.jsonl" "$W/stats8.jsonl"
P8=$(xl domid $G) || lab_fail "switchover: no domain $G"
lab_evidence "$W/events8.jsonl" "$W/switchover8.err"
hvm_backup $PORT "$W/backup8.log" --domain-name "$G-sw" --control-socket "$W/bctl8.sock" \
  --events-json "$W/events8.jsonl"
hvm_replicate $PORT "$W/primary8.log" --stats-json "$W/stats8.jsonl" --control-socket "$W/ctl8.sock"
T8=$(lab_now)
until [ "$(rj_count "$W/stats8.jsonl" acked true)" -ge 3 ] 2>/dev/null; do
  kill -0 $RP 2>/dev/null || lab_fail "switchover: the replicator exited before 3 acked epochs"
  [ "$(lab_elapsed "$T8" | cut -d. -f1)" -lt 600 ] || lab_fail "switchover: fewer than 3 acked epochs after 600 s"
  sleep 0.2
done
# The old host's new backup, for --reverse (the same dom0 here).
SWBP=$BP
hvm_backup $RPORT "$W/backup8r.log" --domain-name "$G-back" --events-json "$W/events8r.jsonl"
B2=$BP
BP=$SWBP
# In the background: it returns once the reverse replication is PROTECTED, which on this shared
# host needs the old domain gone (the new copy takes the name $G first).
romulus switchover --socket "$W/ctl8.sock" --backup-socket "$W/bctl8.sock" --reverse "127.0.0.1:$RPORT" \
  --timeout 300s --json >"$W/switchover8.json" 2>"$W/switchover8.err" &
SWP=$!
lab_wait_exit $RP 600 "switchover: the primary never handed over"
RC=$LAB_RC
[ "$RC" -eq 0 ] || lab_fail "switchover: the primary exited $RC: $(grep -v '^ *$' "$W/primary8.log" | tail -n 1 | cut -c1-240)"
LAST8=$(lab_counter_last "$CUR_SERIAL")
xl list "$P8" 2>/dev/null | awk 'NR == 2 { exit !($5 ~ /s/) }' || { xl list; lab_fail "switchover: the primary domain is not left suspended"; }
if romulus replicate --domain "$P8" --to "127.0.0.1:1" --psk-file "$W/psk" >"$W/stale8.log" 2>&1; then
  lab_fail "switchover: replicate --domain accepted the handed-over domain"
fi
grep -q "handed over to its backup" "$W/stale8.log" || lab_fail "switchover: no clear refusal for the handed-over domain: $(tail -n 1 "$W/stale8.log")"
xl destroy "$P8" >/dev/null 2>&1
wait $SWP; SRC=$?
SW=$(tail -n 1 "$W/switchover8.json")
[ "$SRC" -eq 0 ] && [ "$(rj_get "$SW" ok)" = true ] && [ "$(rj_get "$SW" lost_epochs)" = 0 ] &&
  [ "$(rj_get "$SW" reverse_protection)" = PROTECTED ] || lab_fail "switchover: rc $SRC $SW $(tail -n 2 "$W/switchover8.err")"
FINAL8=$(rj_get "$SW" final_epoch)
[ "$(rj_last_acked "$W/stats8.jsonl")" = "$FINAL8" ] || lab_fail "switchover: the primary's last acked epoch is not the final one ($FINAL8)"
lab_wait_failover "$W/events8.jsonl" "$W/backup8.log"
[ "$(rj_get "$LAB_FO" last_committed_epoch)" = "$FINAL8" ] || lab_fail "switchover: the backup activated epoch $(rj_get "$LAB_FO" last_committed_epoch), the final epoch was $FINAL8"
rj_get "$LAB_FO" reason | grep -q 'planned switchover' || lab_fail "switchover: not a planned switchover: $LAB_FO"
SWSERIAL=$(hvm_serial "$W/backup8.log")
[ -n "$SWSERIAL" ] && [ "$SWSERIAL" != "$CUR_SERIAL" ] || lab_fail "switchover: the backup's device model writes '$SWSERIAL'"
lab_evidence "$SWSERIAL"
lab_wait_counter "$SWSERIAL" $((LAST8 + 2)) 300 || lab_fail "switchover: the HVM guest does not count on (last $(lab_counter_last "$SWSERIAL"), primary was $LAST8)"
FIRST8=$(lab_counter_first "$SWSERIAL")
# Nothing ran after the final checkpoint: the new copy's first line follows the primary's last.
[ "$FIRST8" -ge "$LAST8" ] && [ "$FIRST8" -le $((LAST8 + 1)) ] || lab_fail "switchover: the primary's counter ended at $LAST8, the backup's began at $FIRST8"
lab_note "switchover: final epoch $FINAL8, activated with its device state; counter $LAST8 -> $FIRST8"
# The reverse replication: the new primary (the restore that activated the guest) dies with its
# host once the old host's backup committed; that backup takes over and the guest counts on.
i=0
until lab_session_committed "$W/events8r.jsonl" && [ "$(rj_status "$W/bctl8.sock" protection)" = PROTECTED ]; do
  i=$((i+1)); [ $i -le 1500 ] || lab_fail "switchover --reverse: the reverse session never committed while protected (300 s)"
  sleep 0.2
done
kill -9 $BP 2>/dev/null; wait $BP 2>/dev/null
# After the kill: no checkpoint follows, so the last committed one is at most this line.
RC8=$(lab_counter_last "$SWSERIAL")
NEW8=$(xl domid $G 2>/dev/null || xl domid "$G-sw" 2>/dev/null)
[ -n "$NEW8" ] && xl destroy "$NEW8" >/dev/null 2>&1
lab_wait_failover "$W/events8r.jsonl" "$W/backup8r.log"
BACKSERIAL=$(hvm_serial "$W/backup8r.log")
[ -n "$BACKSERIAL" ] || lab_fail "switchover --reverse: the old host's backup never said where its device model writes"
lab_evidence "$BACKSERIAL"
lab_wait_counter "$BACKSERIAL" 2 300 || lab_fail "switchover --reverse: the guest does not count on the old host"
FR8=$(lab_counter_first "$BACKSERIAL")
[ "$FR8" -gt "$FIRST8" ] && [ "$FR8" -le $((RC8 + 1)) ] || lab_fail "switchover --reverse: counter $FR8 after $FIRST8..$RC8"
lab_note "switchover --reverse: replicated back ($(rj_event_count "$W/events8r.jsonl" commit) commits); new primary killed at counter $RC8, the old host's backup resumed at $FR8 (epoch $(rj_get "$LAB_FO" last_committed_epoch))"
kill $B2 2>/dev/null; wait $B2 2>/dev/null

# ---- 9. an HVM guest without PV drivers. Its kernel is told `nopv`: it runs as on bare
# hardware, registers no event channel callback (HVM_PARAM_CALLBACK_IRQ stays 0) and never
# reads control/shutdown. Before Romulus asked every guest and refused this one ("guest will
# not suspend"); now the hypervisor suspends it (docs/DEVICE-MODEL.md §2.1). Its serial port
# is emulated by QEMU as before; it has no PV device to reconnect.
lab_destroy_all
G9=guest9
S9=$(lab_guest_serial $G9)
rm -f "$S9"
T9=$(lab_now)
G9IP=10.78.0.2
# Its disk: a sparse 64 MiB image behind a disk export, the guest's phy:/dev/nbd0 (hda).
NBD9=/dev/nbd0
IMG9=$W/guest9-hda.img
rm -f "$IMG9"; truncate -s 64M "$IMG9"
hda_export nopv "$IMG9" 9 "$NBD9"
EP9=$EP TAP9=$TAP
lab_evidence "/var/log/xen/qemu-dm-$G9.log"
# Its NIC has xl's vifname=: /lab/vif-lab renames the vif and the device model's tap
# (vif<D>.0-emu) to g9net and g9net-emu as Xen's vif-common.sh would; output commit buffers
# those, and the backup gives its copy the same names.
VN9=g9net
LAB_HVM_VGA=stdvga LAB_GUEST_VIF="type=ioemu,model=e1000,mac=00:16:3e:4c:00:09,script=/lab/vif-lab,vifname=$VN9" \
  LAB_GUEST_DISK="backendtype=phy, format=raw, vdev=hda, access=rw, script=/lab/block-lab, target=$NBD9" \
  lab_guest_create $G9 "$LAB_GUEST_MEM" 1 "nopv lab_ip=$G9IP/24 lab_disk=/dev/sda lab_disk_ms=300" >"$W/domid9" ||
  lab_fail "xl create $G9 (HVM, nopv) failed: $(cat "$W/create-$G9.log")"
D9=$(cat "$W/domid9")
lab_evidence "$S9"
lab_wait_counter "$S9" 3 300 || lab_fail "$G9 (HVM, nopv) never counted to 3 on its serial console"
grep -q "DOMU-NET eth0" "$S9" || lab_fail "$G9 did not bring up its emulated NIC: $(grep -m1 "DOMU-NET\|e1000" "$S9" | cut -c1-200)"
i=0; until [ "$(dr "$S9")" -ge 3 ]; do
  i=$((i+1)); [ $i -le 600 ] || lab_fail "$G9 wrote no 3 records through its emulated IDE disk: $(grep -m1 "DISKERR\|ata\|sda" "$S9" | cut -c1-200)"
  sleep 0.2
done
[ -e "/sys/class/net/$VN9-emu" ] && [ -e "/sys/class/net/$VN9" ] ||
  { ls /sys/class/net; lab_fail "no $VN9 and $VN9-emu (vifname=$VN9) for $G9's vif and emulated NIC"; }
# (dom0-lib.sh's ping checks: lab_pings, lab_ping_replies, lab_held_check)
g9_replies() { lab_ping_replies "$1"; }
g9_ping() { lab_pings "$1" "$G9IP" "$2" "$3"; }
g9_ping "$W/ping9-unprotected.txt" 3 60
[ "$(g9_replies "$W/ping9-unprotected.txt")" -ge 3 ] || { cat "$W/ping9-unprotected.txt"; lab_fail "$G9 does not answer ping on its emulated NIC"; }
# 9a. A replicator SIGKILLed at s2 leaves the guest suspended by the hypervisor. The next
# one resumes it before protecting it, as recorded in dom0's xenstore: without touching its
# registers (fast=0: the guest made no suspend hypercall whose return value a cooperative
# resume would set). Its own backup waits 600 s before failing over and is stopped (SIGTERM:
# no failover) first. (This guest has no event channel callback, so a cooperative resume
# would not hurt it either: what is proved is the path, the record and the resumed guest.)
PORT=$((PORT + 100))
mkdir -p "$W/disks9a" "$W/disks9"
romulus restore --xen --no-fence --listen "127.0.0.1:$PORT" --psk-file "$W/psk" --failover-timeout 600s \
  --guest-kernel-dir "$(dirname "$LAB_DOMU_KERNEL")" --domain-name "$G9-a" --events-json "$W/events9a.jsonl" \
  --disk-dir "$W/disks9a" >"$W/backup9a.log" 2>&1 &
B9A=$!
lab_evidence "$W/backup9a.log"
lab_wait_listening "$W/backup9a.log" $B9A
romulus replicate --domain $G9 --disk-tap "$TAP9" --to "127.0.0.1:$PORT" --psk-file "$W/psk" --interval 200ms \
  --ack-timeout 15s --kill-at s2:3 >"$W/primary9a.log" 2>&1 &
R9A=$!
lab_evidence "$W/primary9a.log"
lab_wait_exit $R9A 600 "nopv: the primary never reached epoch 3"
[ "$LAB_RC" -eq 137 ] || lab_fail "nopv: the primary killed at s2 exited $LAB_RC: $(grep -v '^ *$' "$W/primary9a.log" | tail -n 1 | cut -c1-240)"
grep -q "drill: killing the primary at .* of epoch 3" "$W/primary9a.log" || lab_fail "nopv: no kill-point line for epoch 3"
xl list $G9 2>/dev/null | awk 'NR == 2 { s = $5 } END { exit !(s ~ /s/) }' ||
  { xl list; lab_fail "nopv: the replicator killed at s2 did not leave $G9 suspended"; }
kill $B9A 2>/dev/null
lab_wait_exit $B9A 60 "nopv: the backup of step 9a did not stop on SIGTERM"
grep -q '"event":"failover"' "$W/events9a.jsonl" 2>/dev/null && lab_fail "nopv: the stopped backup failed over"
xl destroy "$G9-a" >/dev/null 2>&1
PORT=$((PORT + 1))
rm -f "$W/events9.jsonl" "$W/stats9.jsonl"
IFB9=$(ls /sys/class/net | grep -c '^rmb-')
hvm_backup $PORT "$W/backup9.log" --domain-name "$G9-copy" --events-json "$W/events9.jsonl" --vif-script /lab/vif-lab \
  --disk-dir "$W/disks9"
B9=$BP
T9=$(lab_now)
# Both interfaces the guest could send on are plugged: its vif (unused without PV drivers)
# and its emulated NIC's tap, by the names its vifname gave them.
romulus replicate --domain $G9 --disk-tap "$TAP9" --to "127.0.0.1:$PORT" --psk-file "$W/psk" --interval 200ms \
  --ack-timeout 15s --stats-json "$W/stats9.jsonl" --netbuf-vif "$VN9" --netbuf-vif "$VN9-emu" >"$W/primary9.log" 2>&1 &
R9=$!
lab_evidence "$W/primary9.log"
C9=$(lab_counter_last "$S9")
# 8 acked epochs, and the disk's first copy complete (until then the backup holds no
# checkpoint it could resume: it would not fail over).
until [ "$(rj_count "$W/stats9.jsonl" acked true)" -ge 8 ] 2>/dev/null && grep -q "copy to the backup complete with epoch" "$W/primary9.log"; do
  kill -0 $R9 2>/dev/null || lab_fail "nopv: the replicator exited before 8 acked epochs: $(grep -v '^ *$' "$W/primary9.log" | tail -n 1 | cut -c1-240)"
  [ "$(lab_elapsed "$T9" | cut -d. -f1)" -lt 900 ] || lab_fail "nopv: fewer than 8 acked epochs, or the disk never copied"
  sleep 0.2
done
grep -q "resumed domain $G9, which a previous replicator left suspended (suspended by the hypervisor.*as recorded" "$W/primary9.log" ||
  lab_fail "nopv: the guest left suspended at s2 was not resumed as one the hypervisor suspended: $(grep -m1 "resumed domain" "$W/primary9.log" | cut -c1-240)"
lab_note "nopv, killed at s2:3 and left suspended: $(grep -m1 "resumed domain" "$W/primary9.log" | sed 's/.*\(resumed domain\)/\1/' | cut -c1-200)"
grep -q "no PV drivers answer .*the hypervisor suspends it" "$W/primary9.log" ||
  lab_fail "nopv: the primary did not suspend the guest through the hypervisor: $(grep -m1 "suspend" "$W/primary9.log" | cut -c1-240)"
! grep -q "suspended by its own kernel" "$W/primary9.log" ||
  lab_fail "nopv: the primary asked the guest to suspend at some epoch: $(grep -m1 "suspended by its own kernel" "$W/primary9.log" | cut -c1-240)"
# The guest runs between the checkpoints: suspended and resumed 8 times, it counts on.
lab_wait_counter "$S9" $((C9 + 3)) 120 || lab_fail "nopv: the guest stopped counting while replicated (at $(lab_counter_last "$S9"))"
# Output commit on the emulated NIC: the IFB on its tap, replies flow while epochs are acked;
# with the backup SIGSTOPped (no epoch can be acked) none reaches dom0 in a 3 s look, and
# once it runs again they arrive (held, not dropped).
# (IFBs are named rmb-<interface>, or rmb-<hash> past 15 characters: counted, not named.)
[ "$(ls /sys/class/net | grep -c '^rmb-')" -ge $((IFB9 + 2)) ] || { ls /sys/class/net; lab_fail "nopv: not one IFB per buffered interface (vif and tap)"; }
grep -q "output commit: .*$VN9-emu" "$W/primary9.log" || lab_fail "nopv: the primary does not say it buffers $VN9-emu"
g9_ping "$W/ping9-protected.txt" 3 120
[ "$(g9_replies "$W/ping9-protected.txt")" -ge 3 ] || { cat "$W/ping9-protected.txt"; lab_fail "nopv: no ping replies on the emulated NIC while protected"; }
lab_held_check "nopv, emulated e1000 ($VN9-emu)" "$G9IP" "$B9" "$W/ping9-held.txt"
kill -0 $R9 2>/dev/null || lab_fail "nopv: the replicator exited during the held-output check: $(grep -v '^ *$' "$W/primary9.log" | tail -n 1 | cut -c1-240)"
# The primary host dies: no checkpoint after the kill, so the last line read after it is at
# least what the last committed checkpoint had printed (read before, an epoch committed in
# between could be ahead of it).
kill -9 $R9 2>/dev/null; wait $R9 2>/dev/null
LAST9=$(lab_counter_last "$S9")
xl destroy $G9 >/dev/null 2>&1
LASTREC9=$(dr "$S9")
ACK9=$(rj_last_acked "$W/stats9.jsonl")
lab_wait_failover "$W/events9.jsonl" "$W/backup9.log"
FO9=$(rj_get "$LAB_FO" last_committed_epoch)
[ -n "$FO9" ] && [ "$FO9" -ge "$ACK9" ] && [ "$FO9" -le $((ACK9 + 1)) ] ||
  lab_fail "nopv: the backup resumed epoch '$FO9'; the primary's last acked was $ACK9"
RS9=$(hvm_serial "$W/backup9.log")
[ -n "$RS9" ] && [ "$RS9" != "$S9" ] || lab_fail "nopv: the backup's device model writes '$RS9'"
lab_evidence "$RS9"
lab_wait_counter "$RS9" $((LAST9 + 2)) 300 || lab_fail "nopv: the failed-over guest does not count on (last $(lab_counter_last "$RS9"), primary was $LAST9)"
FIRST9=$(lab_counter_first "$RS9")
[ "$FIRST9" -gt 1 ] && [ "$FIRST9" -le $((LAST9 + 1)) ] || lab_fail "nopv: the copy's counter began at $FIRST9, the primary's ended at $LAST9"
# The backup's device model recreated the adapter and the NIC; its tap was attached by the
# hotplug script, and the failed-over guest answers on it.
# (Once the primary is gone the replica takes the guest's own name.)
N9=$(xl domid $G9 2>/dev/null || xl domid "$G9-copy" 2>/dev/null)
[ -n "$N9" ] || { xl list; lab_fail "nopv: no failed-over copy of $G9 in xl list"; }
grep -q "vif$N9.0-emu (emulated e1000, mac 00:16:3e:4c:00:09) attached" "$W/backup9.log" ||
  lab_fail "nopv: the backup did not attach the emulated NIC's tap vif$N9.0-emu: $(grep -m1 "emulated NIC\|-emu" "$W/backup9.log" | cut -c1-240)"
tr '\0' ' ' </proc/"$(xenstore-read /local/domain/$N9/image/device-model-pid)"/cmdline 2>/dev/null | grep -q -- "-device VGA,vgamem_mb=" ||
  lab_fail "nopv: the backup's device model has no VGA adapter"
# Its vif's nodes say what libxl's would: a NIC with an emulated twin.
[ "$(xenstore-read /local/domain/0/backend/vif/$N9/0/type 2>/dev/null)" = vif_ioemu ] ||
  lab_fail "nopv: the replica's vif 0 is of type '$(xenstore-read /local/domain/0/backend/vif/$N9/0/type 2>/dev/null)', not vif_ioemu"
# Its VNC server on loopback, published where xl vncviewer looks.
VNC9="$(xenstore-read /local/domain/$N9/console/vnc-listen 2>/dev/null):$(xenstore-read /local/domain/$N9/console/vnc-port 2>/dev/null)"
case $VNC9 in 127.0.0.1:59[0-9][0-9]) ;; *) lab_fail "nopv: the replica's VNC server is at '$VNC9', not on loopback: $(grep -m1 "VNC" "$W/backup9.log" | cut -c1-200)" ;; esac
g9_ping "$W/ping9-failedover.txt" 3 120
[ "$(g9_replies "$W/ping9-failedover.txt")" -ge 3 ] || { cat "$W/ping9-failedover.txt"; lab_fail "nopv: the failed-over guest does not answer ping on its emulated NIC"; }
# The primary's vifname came along: the copy's vif and tap are g9net and g9net-emu again (or,
# had the dead primary's interfaces still held the names, the backup says it kept the defaults).
if [ -e "/sys/class/net/$VN9" ] && [ -e "/sys/class/net/$VN9-emu" ] &&
  [ "$(xenstore-read /local/domain/0/backend/vif/$N9/0/vifname 2>/dev/null)" = "$VN9" ]; then
  VNOTE9="its vif and tap named $VN9 and $VN9-emu as on the primary"
elif grep -q "already has an interface $VN9.*instead of the primary's vifname $VN9" "$W/backup9.log"; then
  VNOTE9="the names $VN9/$VN9-emu still taken when it was activated: defaults kept, as logged"
else
  ls /sys/class/net; lab_fail "nopv: the copy's interfaces are not named $VN9 and $VN9-emu (vifname node '$(xenstore-read /local/domain/0/backend/vif/$N9/0/vifname 2>/dev/null)')"
fi
lab_note "nopv: the failed-over guest answers ping ($(g9_replies "$W/ping9-failedover.txt") replies), $VNOTE9; its VNC server at $VNC9"
# Its emulated IDE disk is the backup's copy: it writes on, its first record after the
# checkpoint is at most the primary's last + 1, and the copy's records end where the
# resumed guest's memory says (the last it printed, or one more in flight), no hole.
tr '\0' ' ' </proc/"$(xenstore-read /local/domain/$N9/image/device-model-pid)"/cmdline 2>/dev/null | grep -q "file=/dev/loop[0-9]*,if=ide,index=0" ||
  lab_fail "nopv: the backup's device model has no IDE disk on the replica's copy"
copy_records nopv "$N9" "$RS9" "$W/disks9" "$LASTREC9"
lab_note "nopv, emulated IDE disk hda: primary's last record $LASTREC9, resumed guest's $COPY_FIRST..$COPY_LAST; the copy: $COPY_OUT"
SUSP9=$(rj_csv "$W/stats9.jsonl" acked true suspend_us | sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}')
lab_note "nopv (HVM without PV drivers, domid $D9): $(rj_count "$W/stats9.jsonl" acked true) epochs acked, suspended by the hypervisor (suspend_us median ${SUSP9:-?}); failover from epoch $FO9, counter $LAST9 -> $FIRST9"
lab_figure "hvm_nopv_suspend_median_us=${SUSP9:-none} hvm_nopv_failover_counter=$LAST9->$FIRST9"
kill $B9 2>/dev/null; wait $B9 2>/dev/null
xl destroy "$G9-copy" >/dev/null 2>&1; xl destroy $G9 >/dev/null 2>&1
nbd-client -d $NBD9 >/dev/null 2>&1
kill $EP9 2>/dev/null; wait $EP9 2>/dev/null
# ---- 10. a write the guest saw complete is lost on the primary (docs/DEVICE-MODEL.md §2.2,
# FAILURE-MODEL §7a). This guest's disk is on an AHCI controller (hdtype="ahci"): the backup
# starts the same controller and port on its copy. The export's store is on a small tmpfs; once it is protected and its
# disk copied, dom0 fills that tmpfs, so the export's next write fails (ENOSPC), the kernel's
# write-back of QEMU's page cache of /dev/nbd1 fails, and the replicator's own descriptor
# hears of it at the next checkpoint, after QEMU's stop. That epoch is never committed: the
# primary keeps the guest suspended for good and hands it to the backup, which resumes the
# epoch before; the guest counts and writes on there, its copy's records without a hole, and
# a second replicator refuses to resume the kept copy.
G10=guest10
S10=$(lab_guest_serial $G10)
rm -f "$S10"
NBD10=/dev/nbd1
FS10=$W/tmpfs10; mkdir -p "$FS10"
mount -t tmpfs -o size=24m tmpfs "$FS10" || lab_fail "lost write: cannot mount a tmpfs for the store"
IMG10=$FS10/hda.img
truncate -s 64M "$IMG10"
hda_export "lost write" "$IMG10" 10 "$NBD10"
EP10=$EP TAP10=$TAP
LAB_HVM_HDTYPE=ahci LAB_GUEST_DISK="backendtype=phy, format=raw, vdev=hda, access=rw, script=/lab/block-lab, target=$NBD10" \
  lab_guest_create $G10 "$LAB_GUEST_MEM" 1 "nopv lab_disk=/dev/sda lab_disk_ms=200" >"$W/domid10" ||
  lab_fail "xl create $G10 (HVM, nopv) failed: $(cat "$W/create-$G10.log")"
D10=$(cat "$W/domid10")
lab_evidence "$S10"
lab_wait_counter "$S10" 3 300 || lab_fail "$G10 (HVM, nopv, AHCI) never counted to 3"
i=0; until [ "$(dr "$S10")" -ge 3 ]; do
  i=$((i+1)); [ $i -le 600 ] || lab_fail "$G10 wrote no 3 records through its AHCI disk: $(grep -m1 "DISKERR\|ahci\|sda" "$S10" | cut -c1-200)"
  sleep 0.2
done
protect_with_disk "lost write" 10 $G10 "$TAP10"
B10=$BP R10=$RP
# The primary's disk fails: no room left under the export's store.
dd if=/dev/zero of="$FS10/filler" bs=64k >/dev/null 2>&1
lab_wait_exit $R10 120 "lost write: the replicator did not end after its store filled up"
[ "$LAB_RC" -ne 0 ] || lab_fail "lost write: the replicator exited 0"
grep -q "RELINQUISHED: epoch [0-9]* cannot be committed: .*emulated disk of $G10: $NBD10: .*: a write the guest saw complete never reached it.*handed over to the backup" "$W/primary10.log" ||
  lab_fail "lost write: the primary did not relinquish the guest to the backup: $(grep -m1 "RELINQUISHED\|error" "$W/primary10.log" | cut -c1-300)"
xl list $G10 2>/dev/null | awk 'NR == 2 { s = $5 } END { exit !(s ~ /s/) }' ||
  { xl list; lab_fail "lost write: $G10 is not kept suspended"; }
[ -n "$(xenstore-read /local/domain/$D10/romulus-kept-suspended 2>/dev/null)" ] ||
  lab_fail "lost write: no romulus-kept-suspended record for domain $D10"
ACK10=$(rj_last_acked "$W/stats10.jsonl")
lab_wait_failover "$W/events10.jsonl" "$W/backup10.log"
FO10=$(rj_get "$LAB_FO" last_committed_epoch)
[ "$FO10" = "$ACK10" ] || lab_fail "lost write: the backup resumed epoch '$FO10', the primary's last acked was $ACK10"
rj_get "$LAB_FO" reason | grep -q "handed over after epoch $ACK10: epoch $((ACK10 + 1)) cannot be committed" ||
  lab_fail "lost write: the failover's reason: $(rj_get "$LAB_FO" reason | cut -c1-240)"
# A second replicator refuses the kept copy, and leaves it suspended.
romulus replicate --domain $G10 --to "127.0.0.1:$PORT" --psk-file "$W/psk" >"$W/primary10b.log" 2>&1 &&
  lab_fail "lost write: a second replicator accepted the kept copy"
grep -q "was kept suspended by a replicator" "$W/primary10b.log" ||
  lab_fail "lost write: the second replicator's refusal: $(grep -v '^ *$' "$W/primary10b.log" | tail -n 1 | cut -c1-240)"
xl list $G10 2>/dev/null | awk 'NR == 2 { s = $5 } END { exit !(s ~ /s/) }' || lab_fail "lost write: $G10 was resumed"
resumed_copy "lost write" 10 $G10 "$S10"
LAST10=$RC_LAST LASTREC10=$RC_LASTREC RS10=$RC_SERIAL FIRST10=$RC_FIRST N10=$RC_DOM
tr '\0' ' ' </proc/"$(xenstore-read /local/domain/$N10/image/device-model-pid)"/cmdline 2>/dev/null |
  grep -q "ahci,id=ahci0 .*file=/dev/loop[0-9]*,if=none,id=ahcidisk-0,.*ide-hd,bus=ahci0.0,unit=0,drive=ahcidisk-0" ||
  lab_fail "lost write: the backup's device model has no AHCI port 0 on the replica's copy"
copy_records "lost write" "$N10" "$RS10" "$W/disks10" "$LASTREC10"
# (0 DISKERR lines: the guest never heard of the lost write; its own flush came after QEMU's
# stop had consumed the error, which is the case the replicator's watch is for)
DERR10=$(grep -c DISKERR "$S10")
FLUSH10=$(rj_csv "$W/stats10.jsonl" acked true dm_flush_us | sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}')
lab_note "lost write: $(grep -m1 "RELINQUISHED: " "$W/primary10.log" | sed 's/.*RELINQUISHED: //' | cut -c1-400); primary kept suspended (its console: $DERR10 DISKERR lines), backup resumed epoch $FO10, counter $LAST10 -> $FIRST10, records $LASTREC10 -> $COPY_FIRST..$COPY_LAST; the copy: $COPY_OUT; dm_flush_us median ${FLUSH10:-?}"
lab_figure "hvm_ahci_dm_flush_median_us=${FLUSH10:-none} hvm_lost_write_handover_epoch=$FO10"
kill $B10 2>/dev/null; wait $B10 2>/dev/null
xl destroy $G10 >/dev/null 2>&1
nbd-client -d $NBD10 >/dev/null 2>&1
kill $EP10 2>/dev/null; wait $EP10 2>/dev/null
umount "$FS10" 2>/dev/null
# ---- 11. a disk that hangs QEMU's stop (docs/DEVICE-MODEL.md §2.3, FAILURE-MODEL §7a). The
# export's store is on an ext4 (a loop mount in dom0); once the guest is protected and its disk
# copied, dom0 freezes that file system: the export's next write to it waits, so the guest's
# write waits in QEMU, and QEMU's stop (which drains and flushes its disks) never returns. The
# replicator gives up on the device model by its deadline, cannot continue it either, and
# relinquishes the guest: suspended for good, handed to the backup, which resumes the last
# acked epoch. The export's tap is untouched by the freeze (its log is in memory), so nothing
# else fails first.
G11=guest11
S11=$(lab_guest_serial $G11)
rm -f "$S11"
NBD11=/dev/nbd2
FS11=$W/ext4-11; mkdir -p "$FS11"
truncate -s 96M "$W/ext4-11.img"
/lab/e2fs/mke2fs -F -q -t ext4 "$W/ext4-11.img" >"$W/mkfs11.log" 2>&1 || lab_fail "hung disk: mke2fs: $(cat "$W/mkfs11.log")"
mount -t ext4 -o loop "$W/ext4-11.img" "$FS11" || lab_fail "hung disk: cannot mount the store's ext4"
IMG11=$FS11/hda.img
truncate -s 64M "$IMG11"
hda_export "hung disk" "$IMG11" 11 "$NBD11"
EP11=$EP TAP11=$TAP
LAB_GUEST_DISK="backendtype=phy, format=raw, vdev=hda, access=rw, script=/lab/block-lab, target=$NBD11" \
  lab_guest_create $G11 "$LAB_GUEST_MEM" 1 "nopv lab_disk=/dev/sda lab_disk_ms=200" >"$W/domid11" ||
  lab_fail "xl create $G11 (HVM, nopv) failed: $(cat "$W/create-$G11.log")"
D11=$(cat "$W/domid11")
lab_evidence "$S11"
lab_wait_counter "$S11" 3 300 || lab_fail "$G11 (HVM, nopv) never counted to 3"
i=0; until [ "$(dr "$S11")" -ge 3 ]; do
  i=$((i+1)); [ $i -le 600 ] || lab_fail "$G11 wrote no 3 records through its IDE disk: $(grep -m1 "DISKERR" "$S11" | cut -c1-200)"
  sleep 0.2
done
protect_with_disk "hung disk" 11 $G11 "$TAP11"
B11=$BP R11=$RP
# The primary's disk hangs: its store's file system is frozen (writes wait, nothing fails).
# (Thawed however this ends, a failure or the runner's timeout: a frozen mount would hang the
# rest of the boot's work.)
thaw11() { fsfreeze --unfreeze "$FS11" 2>/dev/null; }
trap thaw11 EXIT
trap 'thaw11; exit 1' INT TERM HUP
fsfreeze --freeze "$FS11" || lab_fail "hung disk: fsfreeze --freeze $FS11"
TF11=$(lab_now)
lab_wait_exit $R11 120 "hung disk: the replicator did not end after its store froze"
GAVEUP11=$(lab_elapsed "$TF11")
[ "$LAB_RC" -ne 0 ] || lab_fail "hung disk: the replicator exited 0"
grep -q "RELINQUISHED: epoch [0-9]* cannot be committed: epoch [0-9]*, HVM guest $G11: pausing its device model: .*handed over to the backup" "$W/primary11.log" ||
  lab_fail "hung disk: the primary did not relinquish the guest to the backup: $(grep -m1 "RELINQUISHED\|error" "$W/primary11.log" | cut -c1-300)"
xl list $G11 2>/dev/null | awk 'NR == 2 { s = $5 } END { exit !(s ~ /s/) }' ||
  { xl list; lab_fail "hung disk: $G11 is not kept suspended"; }
xenstore-read /local/domain/$D11/romulus-kept-suspended 2>/dev/null | grep -q "pausing its device model" ||
  lab_fail "hung disk: domain $D11's romulus-kept-suspended record: '$(xenstore-read /local/domain/$D11/romulus-kept-suspended 2>/dev/null | cut -c1-200)'"
ACK11=$(rj_last_acked "$W/stats11.jsonl")
[ "$(xenstore-read /local/domain/$D11/romulus-handed-over 2>/dev/null)" = "$ACK11" ] ||
  lab_fail "hung disk: domain $D11's romulus-handed-over record is '$(xenstore-read /local/domain/$D11/romulus-handed-over 2>/dev/null)', the last acked epoch $ACK11"
lab_wait_failover "$W/events11.jsonl" "$W/backup11.log"
FO11=$(rj_get "$LAB_FO" last_committed_epoch)
[ "$FO11" = "$ACK11" ] || lab_fail "hung disk: the backup resumed epoch '$FO11', the primary's last acked was $ACK11"
rj_get "$LAB_FO" reason | grep -q "handed over after epoch $ACK11: epoch $((ACK11 + 1)) cannot be committed" ||
  lab_fail "hung disk: the failover's reason: $(rj_get "$LAB_FO" reason | cut -c1-240)"
# Thawed, QEMU's stop completes on the primary and its monitor answers again: it stays paused
# (the replicator's cont was never delivered), and the guest stays suspended there.
thaw11
trap - EXIT INT TERM HUP
i=0; until xl qemu-monitor-command $G11 "info status" >"$W/status11.txt" 2>&1; do
  i=$((i+1)); [ $i -le 150 ] || lab_fail "hung disk: $G11's device model does not answer after the thaw: $(cat "$W/status11.txt")"
  sleep 0.2
done
grep -q "paused" "$W/status11.txt" || lab_fail "hung disk: $G11's device model after the thaw: $(cat "$W/status11.txt")"
xl list $G11 2>/dev/null | awk 'NR == 2 { s = $5 } END { exit !(s ~ /s/) }' || lab_fail "hung disk: $G11 runs again after the thaw"
# ... and a second replicator refuses it, naming the backup that took over.
romulus replicate --domain $G11 --to "127.0.0.1:$PORT" --psk-file "$W/psk" >"$W/primary11b.log" 2>&1 &&
  lab_fail "hung disk: a second replicator accepted the kept copy"
grep -q "was kept suspended by a replicator: .*Its backup took over from epoch $ACK11" "$W/primary11b.log" ||
  lab_fail "hung disk: the second replicator's refusal: $(grep -v '^ *$' "$W/primary11b.log" | tail -n 1 | cut -c1-240)"
resumed_copy "hung disk" 11 $G11 "$S11"
LAST11=$RC_LAST LASTREC11=$RC_LASTREC RS11=$RC_SERIAL FIRST11=$RC_FIRST N11=$RC_DOM
copy_records "hung disk" "$N11" "$RS11" "$W/disks11" "$LASTREC11"
lab_note "hung disk: $(grep -m1 "RELINQUISHED: " "$W/primary11.log" | sed 's/.*RELINQUISHED: //' | cut -c1-400); given up ${GAVEUP11} s after the freeze; backup resumed epoch $FO11, counter $LAST11 -> $FIRST11, records $LASTREC11 -> $COPY_FIRST..$COPY_LAST; the copy: $COPY_OUT"
lab_figure "hvm_hung_disk_giveup_s=$GAVEUP11 hvm_hung_disk_handover_epoch=$FO11"
kill $B11 2>/dev/null; wait $B11 2>/dev/null
xl destroy $G11 >/dev/null 2>&1
nbd-client -d $NBD11 >/dev/null 2>&1
kill $EP11 2>/dev/null; wait $EP11 2>/dev/null
umount "$FS11" 2>/dev/null
lab_summary "hvm device model: 21 pauses, $(echo "$SUM" | sed -n 's/.*begin_median_ms=\([0-9.]*\).*/stop+save median \1 ms/p'); $N checkpoints by the driver, each with its device state; failover counter $LAST_PRIMARY->$FIRST_BACKUP in $RESUMED s; a failed activation held, retried: $LAST6->$FIRST6; kill drills (phase:epoch)$DRILLS; switchover at epoch $FINAL8 ($LAST8->$FIRST8), --reverse back ($RC8->$FR8); without PV drivers (VGA, emulated e1000 held until the ack, emulated IDE disk replicated): hypervisor suspend, failover $LAST9->$FIRST9; a lost write relinquished to the backup at epoch $FO10 ($LAST10->$FIRST10); a hung disk handed over at epoch $FO11 ($LAST11->$FIRST11)"
xl destroy $G >/dev/null 2>&1
exit 0
