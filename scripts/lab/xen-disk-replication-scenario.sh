#!/bin/sh
#@ title: a guest with a replicated data disk fails over: its disk on the backup ends exactly where its memory says, and it writes on
#@ guests: pv pvh
#@ runs: romulus
#@ skip-if: LAB_NO_DISK
#@ order: 47
# The chain: disk-export + nbd-client + blkback on the primary (as disk-scenario), restore
# --xen --disk-dir on the backup, replicate --domain --disk-tap; 8 acked epochs, then SIGKILL
# the replicator and destroy the primary; the backup fails over; the resumed guest must write
# on (DISKREC past the primary's last, no DISKERR) and the backup's image must hold records
# 1..L with no hole, no bad record, nothing beyond the resumed guest's last DISKREC.
. /lab/dom0-lib.sh
W=$LAB_WORK; G=guest7; NBD=/dev/nbd0; IMG=$W/xvdb.img; SOCK=$W/nbd.sock; TAP=$W/tap.sock; PORT=7310
dl() { _v=$(tr -d '\r' <"$1" 2>/dev/null | sed -n 's/.*DISKREC \([0-9][0-9]*\).*/\1/p' | tail -n1); echo "${_v:-0}"; }
truncate -s 64M "$IMG"
romulus disk-export --store "$IMG" --name xvdb --nbd-socket "$SOCK" --tap-socket "$TAP" >"$W/export.log" 2>&1 &
EP=$!
lab_evidence "$W/export.log"
i=0; until grep -q ready "$W/export.log"; do i=$((i+1)); [ $i -le 300 ] || lab_fail "export not ready"; sleep 0.1; done
nbd-client -unix "$SOCK" "$NBD" -N xvdb >"$W/nbdc.log" 2>&1 || lab_fail "nbd-client"
rm -f "$(lab_console $G)" "$(lab_console $G--incoming)"
LAB_GUEST_DISK="backendtype=phy, format=raw, vdev=xvdb, access=rw, script=/lab/block-lab, target=$NBD" \
  lab_guest_create $G 128 1 "lab_disk=/dev/xvdb lab_disk_ms=300 lab_disk_max=0" >"$W/domid" || lab_fail "create"
P=$(cat "$W/domid"); C1=$(lab_console $G)
i=0; until [ "$(dl "$C1")" -ge 5 ]; do i=$((i+1)); [ $i -le 1200 ] || lab_fail "no 5 records"; sleep 0.2; done
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/psk"; chmod 600 "$W/psk"
mkdir -p "$W/disks"
romulus restore --xen --no-fence --listen "127.0.0.1:$PORT" --psk-file "$W/psk" --failover-timeout 2s \
  --disk-dir "$W/disks" --events-json "$W/events.jsonl" >"$W/backup.log" 2>&1 &
BP=$!
lab_evidence "$W/backup.log" "$W/events.jsonl" "$W/primary.log" "$W/pevents.jsonl"
lab_wait_listening "$W/backup.log" $BP
romulus replicate --domain $G --disk-tap "$TAP" --to "127.0.0.1:$PORT" --psk-file "$W/psk" --interval 100ms --ack-timeout 15s \
  --stats-json "$W/stats.jsonl" --events-json "$W/pevents.jsonl" >"$W/primary.log" 2>&1 &
RP=$!
i=0
until [ "$(rj_count "$W/stats.jsonl" acked true)" -ge 8 ] 2>/dev/null; do
  kill -0 $RP 2>/dev/null || lab_fail "replicator exited: $(grep -E ' (error|critical) ' "$W/primary.log" | tail -n1 | cut -c1-300)"
  i=$((i+1)); [ $i -le 3000 ] || lab_fail "no 8 acked epochs"
  sleep 0.2
done
lab_note "8 epochs acked; primary DISKREC $(dl "$C1")"
LASTP=$(dl "$C1")
kill -9 $RP; xl destroy "$P" >/dev/null 2>&1
C1N=$(lab_lines "$C1")
LASTP2=$(dl "$C1")
lab_note "primary killed: last DISKREC $LASTP2 (before kill $LASTP); acked $(rj_last_acked "$W/stats.jsonl")"
lab_wait_failover "$W/events.jsonl" "$W/backup.log"
lab_note "failover: $(echo "$LAB_FO" | cut -c1-300)"
C2=$W/backup-console.log; T=$(lab_now)
until lab_replica_console $G "$C1N" "$C2"; [ "$(dl "$C2")" -ge $((LASTP2 + 5)) ]; do
  [ "$(lab_elapsed "$T" | cut -d. -f1)" -lt 240 ] || { tail -n 20 "$C2"; lab_fail "resumed guest: DISKREC $(dl "$C2")"; }
  sleep 0.5
done
FIRST=$(tr -d '\r' <"$C2" | sed -n 's/.*DISKREC \([0-9][0-9]*\).*/\1/p' | head -n1)
lab_note "resumed guest: first DISKREC $FIRST, now $(dl "$C2"), DISKERR $(grep -c DISKERR "$C2")"
xl list | sed "s/^/LAB-NOTE $LAB_SCENARIO xl: /"
ls -la "$W/disks" | sed "s/^/LAB-NOTE $LAB_SCENARIO disks: /"
grep -iE 'disk|vbd|loop' "$W/backup.log" | tail -n 8 | cut -c1-250 | sed "s/^/LAB-NOTE $LAB_SCENARIO backup: /"
# The writer may be between a write and its DISKREC line when the guest is destroyed: the
# image's last record is the guest's last DISKREC or the one after it.
xl destroy $G >/dev/null 2>&1
L2=$(dl "$C2")
[ "$(grep -c DISKERR "$C2")" -eq 0 ] || lab_fail "resumed guest: $(grep -m1 DISKERR "$C2" | tr -d '\r')"
[ "$FIRST" -le $((LASTP2 + 1)) ] || lab_fail "resumed guest's first DISKREC $FIRST is beyond the primary's last $LASTP2 + 1"
for f in "$W"/disks/*.img; do
  out=$(labdisk check "$f" 2>&1) || lab_fail "backup image $f: $out"
  last=$(echo "$out" | sed -n 's/.*last=\([0-9]*\).*/\1/p')
  case $last in "$L2"|"$((L2 + 1))") ;; *) lab_fail "backup image $f: last=$last, the resumed guest's last DISKREC $L2" ;; esac
  lab_note "backup image: $out (resumed guest's last DISKREC $L2)"
done
kill $BP 2>/dev/null; nbd-client -d $NBD >/dev/null 2>&1; kill $EP 2>/dev/null
exit 0
