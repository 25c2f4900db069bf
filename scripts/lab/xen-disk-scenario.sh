#!/bin/sh
#@ title: a guest's data disk through the kernel NBD client and blkback, served by romulus disk-export: every record the guest's writer said it wrote is on the store, nothing else
#@ runs: romulus
#@ guests: pv pvh
#@ order: 45
#@ skip-if: LAB_NO_DISK
# Scenario "disk-scenario" (issue 13; docs/DISK.md §1, §8): the path a protected guest's data
# disk takes on a Xen host, end to end, with a writer whose records can be checked.
#   guest xen-blkfront (/dev/xvdb) -ring-> dom0 blkback -> /dev/nbd0 (nbd.ko, netlink)
#     -UNIX socket-> romulus disk-export -> the store (a 64 MiB sparse file)
#  1. `romulus disk-export --store IMG --name xvdb --nbd-socket SOCK --tap-socket TAP` runs in
#     the background and must log "ready";
#  2. `nbd-client -unix SOCK /dev/nbd0 -N xvdb` connects the kernel client (netlink mode: no
#     process stays behind), /dev/nbd0 must have the store's size;
#  3. guest7 boots with disk phy:/dev/nbd0 as xvdb (hotplug script /lab/block-lab) and runs
#     `labdisk write /dev/xvdb` (domu-init.sh lab_disk=): record n at offset n*4096 every
#     300 ms, "DISKREC n" on its console after each write returned, "DISKDONE N" after
#     record N = LAB_DISK_RECORDS (default 40);
#  4. [the replicator attaches here: see below];
#  5. the guest is destroyed, /dev/nbd0 disconnected, the export stopped with SIGTERM (exit 0);
#  6. `labdisk check IMG` must find records 1..N, all valid, no hole, nothing bad, and N must
#     be the last DISKREC the guest printed (its console's DISKREC lines 1..N in order).
# Optional (LAB_DISK_KILL_EXPORT=1, an experiment, observations only): a second run where the
# export is SIGKILLed while the guest writes; what the guest, the kernel client and blkback do
# then is reported as LAB-NOTE lines (the question: must the export outlive the replicator).
# Knobs (--env): LAB_DISK_RECORDS (40), LAB_DISK_MS (300), LAB_DISK_NBD (/dev/nbd0),
# LAB_DISK_EXPORT_ARGS (extra disk-export flags), LAB_DISK_KILL_EXPORT, LAB_DISK_KILL_WATCH (s, 60).
. /lab/dom0-lib.sh
W=$LAB_WORK
G=guest7
N=${LAB_DISK_RECORDS:-40}
MS=${LAB_DISK_MS:-300}
NBD=${LAB_DISK_NBD:-/dev/nbd0}
NBDN=$(basename "$NBD")
IMG=$W/xvdb.img
SOCK=$W/nbd.sock
TAP=$W/tap.sock
EXPORT_PID=""

cleanup() {
  xl destroy $G >/dev/null 2>&1
  nbd-client -d "$NBD" >/dev/null 2>&1
  [ -n "$EXPORT_PID" ] && kill "$EXPORT_PID" 2>/dev/null
}
trap cleanup EXIT

# ---- prerequisites, said plainly when missing
[ -x "${LAB_ROMULUS:-/usr/bin/romulus}" ] || lab_fail "no romulus binary in dom0"
romulus disk-export --help >"$W/export-help.txt" 2>&1
grep -q -- '--nbd-socket' "$W/export-help.txt" || lab_fail "this romulus has no 'disk-export --nbd-socket' ($(head -n1 "$W/export-help.txt" | cut -c1-160))"
command -v nbd-client >/dev/null || lab_fail "no nbd-client in dom0"
[ -b "$NBD" ] || lab_fail "no $NBD (module nbd not loaded?)"
[ -x /lab/block-lab ] || lab_fail "no /lab/block-lab hotplug script"

# disk_export_start IMG : start the export in the background (EXPORT_PID), wait for "ready"
disk_export_start() {
  rm -f "$SOCK" "$TAP"
  romulus disk-export --store "$1" --name xvdb --nbd-socket "$SOCK" --tap-socket "$TAP" ${LAB_DISK_EXPORT_ARGS:-} \
    >"$W/export.log" 2>&1 &
  EXPORT_PID=$!
  lab_evidence "$W/export.log"
  _i=0
  until grep -q 'ready' "$W/export.log" 2>/dev/null; do
    kill -0 $EXPORT_PID 2>/dev/null || { wait $EXPORT_PID; lab_fail "romulus disk-export exited (status $?) before it was ready"; }
    _i=$((_i+1)); [ $_i -le 300 ] || lab_fail "romulus disk-export not ready after 30 s"
    sleep 0.1
  done
}

# nbd_connect : the kernel client on $NBD, checked by its size in sysfs
nbd_connect() {
  _t=$(lab_now)
  nbd-client -unix "$SOCK" "$NBD" -N xvdb >"$W/nbd-client.log" 2>&1 || {
    cat "$W/nbd-client.log"; lab_fail "nbd-client -unix $SOCK $NBD -N xvdb failed"; }
  lab_evidence "$W/nbd-client.log"
  lab_nbd_requests "$NBD"
  _want=$(( $(stat -c %s "$IMG") / 512 ))
  _i=0
  until [ "$(cat /sys/block/$NBDN/size 2>/dev/null)" = "$_want" ]; do
    _i=$((_i+1)); [ $_i -le 100 ] || lab_fail "$NBD has size '$(cat /sys/block/$NBDN/size 2>/dev/null)' sectors, want $_want"
    sleep 0.1
  done
  lab_note "$NBD connected in $(lab_elapsed "$_t") s: $(tr '\n' ' ' <"$W/nbd-client.log" | cut -c1-200)"
}

# nbd_disconnect : nbd-client -d, then wait (10 s) until the device has no size
nbd_disconnect() {
  nbd-client -d "$NBD" >"$W/nbd-disconnect.log" 2>&1 || lab_note "nbd-client -d $NBD: $(tr '\n' ' ' <"$W/nbd-disconnect.log")"
  _i=0
  until [ "$(cat /sys/block/$NBDN/size 2>/dev/null)" = 0 ]; do
    _i=$((_i+1)); [ $_i -le 100 ] || lab_fail "$NBD still has size $(cat /sys/block/$NBDN/size) after nbd-client -d"
    sleep 0.1
  done
}

# export_stop : SIGTERM, then the export must exit 0 within 30 s
export_stop() {
  kill -TERM "$EXPORT_PID" 2>/dev/null
  _i=0
  while kill -0 "$EXPORT_PID" 2>/dev/null; do
    _i=$((_i+1)); [ $_i -le 300 ] || lab_fail "romulus disk-export still runs 30 s after SIGTERM"
    sleep 0.1
  done
  wait "$EXPORT_PID"; _rc=$?
  EXPORT_PID=""
  [ "$_rc" = 0 ] || lab_fail "romulus disk-export exited $_rc on SIGTERM (want 0)"
}

# folded : kernel log lines without timestamps, each once with its count, in first-seen order
folded() {
  tr -d '\r' | awk '{ l = $0; sub(/^\[ *[0-9.]+\] /, "", l); if (!(l in n)) o[++k] = l; n[l]++ }
    END { for (i = 1; i <= k; i++) print n[o[i]] "x " o[i] }'
}

# diskrec_last FILE -> the last DISKREC n on a console (0 if none)
diskrec_last() {
  _v=$(tr -d '\r' <"$1" 2>/dev/null | sed -n 's/.*DISKREC \([0-9][0-9]*\).*/\1/p' | tail -n1)
  echo "${_v:-0}"
}

# guest_with_disk NAME MAX : create NAME with the data disk and the writer (MAX records, 0: no
# limit); waits (240 s) for the writer's first line
guest_with_disk() {
  rm -f "$(lab_console "$1")"
  LAB_GUEST_DISK="backendtype=phy, format=raw, vdev=xvdb, access=rw, script=/lab/block-lab, target=$NBD" \
    lab_guest_create "$1" "$LAB_GUEST_MEM" 1 "lab_disk=/dev/xvdb lab_disk_ms=$MS lab_disk_max=$2" >"$W/domid-$1" ||
    lab_fail "xl create $1 with disk $NBD failed: $(tail -n 3 "$W/create-$1.log" | tr '\n' ' ')"
  lab_evidence "/run/lab/block-lab.log"
  _c=$(lab_console "$1"); _i=0
  until grep -q 'DISKWRITER\|DISKERR' "$_c" 2>/dev/null; do
    _i=$((_i+1)); [ $_i -le 1200 ] || lab_fail "$1: no disk writer on its console after 240 s"
    sleep 0.2
  done
  grep -q 'DISKERR' "$_c" && lab_fail "$1: $(grep -m1 DISKERR "$_c" | tr -d '\r')"
  lab_note "$1: $(grep -m1 DISKWRITER "$_c" | tr -d '\r')"
  lab_note "$1: backend $(xenstore-read "/local/domain/0/backend/vbd/$(cat "$W/domid-$1")/51728/physical-device" 2>/dev/null) state $(xenstore-read "/local/domain/0/backend/vbd/$(cat "$W/domid-$1")/51728/state" 2>/dev/null)"
}

# ---- 1-2. the export and the kernel client
rm -f "$IMG"; truncate -s 64M "$IMG" || lab_fail "cannot create $IMG"
disk_export_start "$IMG"
lab_note "export: $(grep -m1 "disk export 'xvdb'" "$W/export.log" | cut -c1-200)"
lab_note "export: $(grep -m1 ready "$W/export.log" | cut -c1-200)"
# dom0's root has CAP_SYS_RESOURCE: the export must have marked itself (disk/io_flusher.h)
grep -q 'marked as an I/O flusher' "$W/export.log" ||
  lab_fail "the export is not marked as an I/O flusher: $(grep -m1 'I/O flusher' "$W/export.log" | cut -c1-240)"
nbd_connect

# ---- 3. the guest and its writer
T0=$(lab_now)
guest_with_disk $G "$N"
C=$(lab_console $G)
# records rising, until DISKDONE (bounded: 20x the nominal time, TCG on a loaded host)
LIMIT=$(( N * MS / 50 + 120 ))
TW=$(lab_now); seen=0
until grep -q 'DISKDONE' "$C"; do
  grep -q 'DISKERR' "$C" && lab_fail "$G: $(grep -m1 DISKERR "$C" | tr -d '\r')"
  # (DISKDONE and the writer's exit line come together: only an exit without DISKDONE fails)
  grep -q 'DISKWRITER-EXIT' "$C" && ! grep -q 'DISKDONE' "$C" &&
    lab_fail "$G: the writer exited before DISKDONE: $(grep -m1 DISKWRITER-EXIT "$C" | tr -d '\r')"
  now=$(diskrec_last "$C")
  # rising: a note each time the count passes a multiple of 10
  [ $((now / 10)) -gt $((seen / 10)) ] && lab_note "$G: DISKREC $now after $(lab_elapsed "$TW") s"
  seen=$now
  [ "$(lab_elapsed "$TW" | cut -d. -f1)" -lt "$LIMIT" ] || lab_fail "$G: no DISKDONE after $LIMIT s (last DISKREC $now)"
  sleep 0.5
done
WROTE_S=$(lab_elapsed "$TW")

# ---- 4. the replicator attaches here.
# When `romulus replicate --disk-tap` and the Xen backup's disks exist, this is where
#   romulus restore --xen ... (the backup, with its own disk store)
#   romulus replicate --domain $G --disk-tap "$TAP" ...
# start, the guest runs with its writer unlimited (LAB_DISK_RECORDS=0), the primary host dies
# (replicator SIGKILLed, primary destroyed) and the backup resumes the guest: its writer goes
# on from the n its memory holds. The checks then compare the backup's disk (labdisk check)
# with the last DISKREC the guest printed before the failover and after it.

# ---- 5. stop: guest, kernel client, export
LAST=$(diskrec_last "$C")
xl destroy $G >/dev/null 2>&1
i=0; while xl domid $G >/dev/null 2>&1; do i=$((i+1)); [ $i -le 300 ] || lab_fail "$G not gone 30 s after xl destroy"; sleep 0.1; done
nbd_disconnect
export_stop

# ---- 6. the store against what the guest said
# every DISKREC line, in order, must be 1..LAST once each
SEQ=$(tr -d '\r' <"$C" | sed -n 's/.*DISKREC \([0-9][0-9]*\).*/\1/p' | awk '$1 != NR { print "line " NR " says " $1; exit }')
[ -z "$SEQ" ] || lab_fail "$G's DISKREC lines are not 1..$LAST in order: $SEQ"
CHECK=$(labdisk check "$IMG" 2>"$W/check.err"); CRC=$?
lab_evidence "$W/check.err"
lab_note "labdisk check: $CHECK (exit $CRC); the guest's last DISKREC: $LAST"
v() { echo "$CHECK" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
[ "$CRC" -le 1 ] || lab_fail "labdisk check could not read $IMG: $(cat "$W/check.err")"
[ "$(v holes)" = 0 ] || lab_fail "the store has $(v holes) hole(s) below its last record: $CHECK"
[ "$(v bad)" = 0 ] || lab_fail "the store has $(v bad) bad block(s): $CHECK; $(head -n 3 "$W/check.err" | tr '\n' ' ')"
[ "$(v last)" = "$LAST" ] || lab_fail "the store's last record is $(v last), the guest's last DISKREC $LAST"
[ "$LAST" = "$N" ] || lab_fail "the guest printed DISKDONE but its last DISKREC is $LAST, not $N"
US=$(tr -d '\r' <"$C" | sed -n 's/.*DISKREC [0-9]* us=\([0-9]*\).*/\1/p' | sort -n |
  awk '{ a[NR] = $1 } END { if (NR) printf "write_us_median=%d write_us_p90=%d write_us_max=%d", a[int((NR+1)/2)], a[int(NR*0.9) > 0 ? int(NR*0.9) : 1], a[NR] }')
lab_figure "records=$LAST seconds=$WROTE_S $US store_kb=$(du -k "$IMG" | cut -f1)"

# ---- optional: the export SIGKILLed under a writing guest (observations)
if [ -n "${LAB_DISK_KILL_EXPORT:-}" ]; then
  G2=guest8
  rm -f "$IMG"; truncate -s 64M "$IMG"
  disk_export_start "$IMG"
  nbd_connect
  guest_with_disk $G2 0
  C2=$(lab_console $G2)
  lab_wait_counter "$C2" 1 240 >/dev/null
  i=0; until [ "$(diskrec_last "$C2")" -ge 10 ]; do i=$((i+1)); [ $i -le 600 ] || lab_fail "$G2: no 10 records"; sleep 0.2; done
  D2=$(cat "$W/domid-$G2"); BE=/local/domain/0/backend/vbd/$D2/51728
  dmesg -c >/dev/null 2>&1
  BEFORE=$(diskrec_last "$C2"); CNT_BEFORE=$(lab_counter_last "$C2")
  kill -9 "$EXPORT_PID"; TK=$(lab_now); wait "$EXPORT_PID" 2>/dev/null; EXPORT_PID=""
  lab_note "kill: export SIGKILLed at DISKREC $BEFORE (counter $CNT_BEFORE)"
  WATCH=${LAB_DISK_KILL_WATCH:-60}; t=0
  while [ "$t" -lt "$WATCH" ]; do
    sleep 5; t=$((t+5))
    lab_note "kill +${t}s: guest DISKREC $(diskrec_last "$C2") counter $(lab_counter_last "$C2") DISKERR lines $(grep -c DISKERR "$C2");" \
      "$NBDN size=$(cat /sys/block/$NBDN/size 2>/dev/null) pid=$(cat /sys/block/$NBDN/pid 2>/dev/null);" \
      "blkback state=$(xenstore-read $BE/state 2>/dev/null) xl=$(xl list $G2 2>/dev/null | awk 'NR==2 {print $5}')"
  done
  grep -aE 'DISKERR|blkfront|xvdb|I/O error|Buffer I/O' "$C2" | sed 's/(failed after [0-9]* us)/(failed after N us)/' | folded |
    head -n 8 | cut -c1-200 | sed "s/^/LAB-NOTE $LAB_SCENARIO kill guest: /"
  dmesg | grep -aiE 'nbd|blkback|block|I/O' | folded | head -n 12 | cut -c1-200 | sed "s/^/LAB-NOTE $LAB_SCENARIO kill dom0: /"
  # can the device be given a server again? (netlink: nbd-client on a device still configured)
  disk_export_start "$IMG"
  nbd-client -unix "$SOCK" "$NBD" -N xvdb >"$W/nbd-reconnect.log" 2>&1; RRC=$?
  lab_note "kill: nbd-client again on $NBD: exit $RRC: $(tr '\n' ' ' <"$W/nbd-reconnect.log" | cut -c1-200)"
  sleep 5
  lab_note "kill: after the reconnect attempt: guest DISKREC $(diskrec_last "$C2") DISKERR lines $(grep -c DISKERR "$C2"); $NBDN size=$(cat /sys/block/$NBDN/size 2>/dev/null)"
  # the only way back with Debian's nbd-client: disconnect (the stuck request fails), connect
  # again while blkback still holds the device open
  dmesg -c >/dev/null 2>&1
  nbd-client -d "$NBD" >"$W/nbd-d2.log" 2>&1; DRC=$?
  sleep 3
  lab_note "kill: nbd-client -d with the guest attached: exit $DRC; guest DISKREC $(diskrec_last "$C2") DISKERR lines $(grep -c DISKERR "$C2"); $NBDN size=$(cat /sys/block/$NBDN/size 2>/dev/null)"
  nbd-client -unix "$SOCK" "$NBD" -N xvdb >"$W/nbd-reconnect2.log" 2>&1; RRC=$?
  R0=$(diskrec_last "$C2")
  lab_note "kill: nbd-client after -d: exit $RRC: $(tr '\n' ' ' <"$W/nbd-reconnect2.log" | cut -c1-160); max_sectors_kb after the reconnect $(cat /sys/block/$NBDN/queue/max_sectors_kb 2>/dev/null) (1024 before)"
  TR=$(lab_now)
  until [ "$(diskrec_last "$C2")" -ge $((R0 + 5)) ] || [ "$(lab_elapsed "$TR" | cut -d. -f1)" -ge 30 ]; do sleep 1; done
  lab_note "kill: $(lab_elapsed "$TR") s later: guest DISKREC $R0 -> $(diskrec_last "$C2"), DISKERR lines $(grep -c DISKERR "$C2"), blkback state=$(xenstore-read $BE/state 2>/dev/null)"
  grep -aE 'DISKERR|I/O error|blk_update|xvdb' "$C2" | sed 's/(failed after [0-9]* us)/(failed after N us)/' | folded |
    head -n 6 | cut -c1-200 | sed "s/^/LAB-NOTE $LAB_SCENARIO kill guest after: /"
  dmesg | grep -aiE 'nbd|blkback|I/O' | folded | head -n 8 | cut -c1-200 | sed "s/^/LAB-NOTE $LAB_SCENARIO kill dom0 after: /"
  xl destroy $G2 >/dev/null 2>&1
  nbd-client -d "$NBD" >/dev/null 2>&1
  kill -TERM "$EXPORT_PID" 2>/dev/null; wait "$EXPORT_PID" 2>/dev/null; EXPORT_PID=""
  lab_note "kill: store after it all: $(labdisk check "$IMG" 2>/dev/null) (guest's last DISKREC $(diskrec_last "$C2"))"
fi

lab_summary "disk: $LAST records through blkback + nbd + disk-export in $WROTE_S s, store last=$LAST holes=0 bad=0"
exit 0
