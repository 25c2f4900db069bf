#!/bin/sh
#@ title: a guest with a replicated data disk fails over (SIGKILL at a random epoch, kill-points s2 and c): its disk on the backup ends where its memory says, and it writes on
#@ guests: pv pvh
#@ runs: romulus
#@ skip-if: LAB_NO_DISK
#@ order: 47
# The chain: disk-export + nbd-client + blkback on the primary (as disk-scenario), restore
# --xen --disk-dir on the backup, replicate --domain --disk-tap. One drill per entry of
# $LAB_DISK_KILLS (default "random s2 c"), each with a fresh guest, image and backup:
#   random  SIGKILL the replicator after a random number (6..13) of acked epochs, then destroy
#           the primary: the backup fails over from an epoch ≥ the last acked one;
#   s2, c   `replicate --kill-at PHASE:K` (K = 8): the primary dies with the guest suspended
#           (s2: the backup resumes from K-1) or after EPOCH_END K, unacked (c: from K).
# Then, for each: the resumed guest must write on (DISKREC past the primary's last, never a
# DISKERR), its first DISKREC be at most the primary's last + 1 (its memory never believes
# less than the checkpoint holds), and the backup's image hold records 1..L with no hole, no
# bad record, nothing beyond L or L+1 (L: the resumed guest's last DISKREC; +1: a write in
# flight when it was destroyed).
. /lab/dom0-lib.sh
W=$LAB_WORK; NBD=/dev/nbd0; K=8
dl() { _v=$(tr -d '\r' <"$1" 2>/dev/null | sed -n 's/.*DISKREC \([0-9][0-9]*\).*/\1/p' | tail -n1); echo "${_v:-0}"; }
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/psk"; chmod 600 "$W/psk"
PORT=7310
for KILL in ${LAB_DISK_KILLS:-random s2 c}; do
  case $KILL in random|s2|c) ;; *) lab_fail "LAB_DISK_KILLS: unknown drill $KILL (random, s2, c)" ;; esac
  G=guest7-$KILL; D=$W/$KILL; PORT=$((PORT + 1))
  mkdir -p "$D/disks"
  IMG=$D/xvdb.img; SOCK=$D/nbd.sock; TAP=$D/tap.sock
  truncate -s 64M "$IMG"
  romulus disk-export --store "$IMG" --name xvdb --nbd-socket "$SOCK" --tap-socket "$TAP" >"$D/export.log" 2>&1 &
  EP=$!
  LAB_EVIDENCE=""
  lab_evidence "$D/export.log"
  i=0; until grep -q ready "$D/export.log"; do i=$((i+1)); [ $i -le 300 ] || lab_fail "$KILL: export not ready"; sleep 0.1; done
  nbd-client -unix "$SOCK" "$NBD" -N xvdb >"$D/nbdc.log" 2>&1 || lab_fail "$KILL: nbd-client: $(cat "$D/nbdc.log")"
  rm -f "$(lab_console $G)" "$(lab_console $G--incoming)"
  LAB_GUEST_DISK="backendtype=phy, format=raw, vdev=xvdb, access=rw, script=/lab/block-lab, target=$NBD" \
    lab_guest_create $G 128 1 "lab_disk=/dev/xvdb lab_disk_ms=300 lab_disk_max=0" >"$D/domid" || lab_fail "$KILL: create"
  P=$(cat "$D/domid"); C1=$(lab_console $G)
  i=0; until [ "$(dl "$C1")" -ge 5 ]; do i=$((i+1)); [ $i -le 1200 ] || lab_fail "$KILL: no 5 records"; sleep 0.2; done
  romulus restore --xen --no-fence --listen "127.0.0.1:$PORT" --psk-file "$W/psk" --failover-timeout 2s \
    --disk-dir "$D/disks" --events-json "$D/events.jsonl" >"$D/backup.log" 2>&1 &
  BP=$!
  lab_evidence "$D/backup.log" "$D/events.jsonl" "$D/primary.log"
  lab_wait_listening "$D/backup.log" $BP
  KILLAT=""; [ "$KILL" = random ] || KILLAT="--kill-at $KILL:$K"
  romulus replicate --domain $G --disk-tap "$TAP" --to "127.0.0.1:$PORT" --psk-file "$W/psk" --interval 100ms \
    --ack-timeout 15s $KILLAT --stats-json "$D/stats.jsonl" >"$D/primary.log" 2>&1 &
  RP=$!
  T0=$(lab_now)
  if [ "$KILL" = random ]; then
    N=$((6 + $(od -An -N1 -tu1 /dev/urandom) % 8))
    until [ "$(rj_count "$D/stats.jsonl" acked true)" -ge $N ] 2>/dev/null; do
      kill -0 $RP 2>/dev/null || lab_fail "$KILL: replicator exited: $(grep -E ' (error|critical) ' "$D/primary.log" | tail -n1 | cut -c1-300)"
      [ "$(lab_elapsed "$T0" | cut -d. -f1)" -lt 600 ] || lab_fail "$KILL: no $N acked epochs"
      sleep 0.2
    done
    kill -9 $RP
    wait $RP
  else
    while kill -0 $RP 2>/dev/null; do
      [ "$(lab_elapsed "$T0" | cut -d. -f1)" -lt 600 ] || lab_fail "$KILL: the primary never reached epoch $K"
      sleep 0.2
    done
    wait $RP; RC=$?
    [ "$RC" -eq 137 ] || lab_fail "$KILL: the primary exited $RC, not by its kill-point"
    grep -q "drill: killing the primary at .* of epoch $K" "$D/primary.log" || lab_fail "$KILL: no kill-point line for epoch $K"
  fi
  xl destroy "$P" >/dev/null 2>&1
  C1N=$(lab_lines "$C1")
  LASTP=$(dl "$C1")
  ACKED=$(rj_last_acked "$D/stats.jsonl")
  lab_wait_failover "$D/events.jsonl" "$D/backup.log"
  FO_EPOCH=$(rj_get "$LAB_FO" last_committed_epoch)
  case $KILL in
    random) [ "$FO_EPOCH" -ge "$ACKED" ] || lab_fail "random: the backup resumed from epoch $FO_EPOCH, before the acked $ACKED" ;;
    s2) [ "$FO_EPOCH" = $((K - 1)) ] || lab_fail "s2: the backup resumed from epoch $FO_EPOCH, want $((K - 1))" ;;
    c) [ "$FO_EPOCH" = $K ] || lab_fail "c: the backup resumed from epoch $FO_EPOCH, want $K" ;;
  esac
  lab_note "$KILL: primary dead after $ACKED acked epochs, last DISKREC $LASTP; backup resumed from epoch $FO_EPOCH"
  C2=$D/backup-console.log; T=$(lab_now)
  until lab_replica_console $G "$C1N" "$C2"; [ "$(dl "$C2")" -ge $((LASTP + 5)) ]; do
    [ "$(lab_elapsed "$T" | cut -d. -f1)" -lt 240 ] || { tail -n 20 "$C2"; lab_fail "$KILL: resumed guest: DISKREC $(dl "$C2")"; }
    sleep 0.5
  done
  FIRST=$(tr -d '\r' <"$C2" | sed -n 's/.*DISKREC \([0-9][0-9]*\).*/\1/p' | head -n1)
  grep -iE 'opened by blkback' "$D/backup.log" | tail -n 2 | cut -c1-250 | sed "s/^/LAB-NOTE $LAB_SCENARIO $KILL backup: /"
  xl destroy $G >/dev/null 2>&1
  L2=$(dl "$C2")
  [ "$(grep -c DISKERR "$C2")" -eq 0 ] || lab_fail "$KILL: resumed guest: $(grep -m1 DISKERR "$C2" | tr -d '\r')"
  [ "$FIRST" -le $((LASTP + 1)) ] || lab_fail "$KILL: resumed guest's first DISKREC $FIRST is beyond the primary's last $LASTP + 1"
  n=0
  for f in "$D"/disks/*.img; do
    n=$((n + 1))
    out=$(labdisk check "$f" 2>&1) || lab_fail "$KILL: backup image $f: $out"
    last=$(echo "$out" | sed -n 's/.*last=\([0-9]*\).*/\1/p')
    case $last in "$L2"|"$((L2 + 1))") ;; *) lab_fail "$KILL: backup image $f: last=$last, the resumed guest's last DISKREC $L2" ;; esac
    lab_note "$KILL: resumed guest's DISKREC $FIRST..$L2; backup image: $out"
  done
  [ $n -eq 1 ] || lab_fail "$KILL: $n images in $D/disks, want 1"
  kill $BP 2>/dev/null; wait $BP 2>/dev/null
  nbd-client -d $NBD >/dev/null 2>&1
  kill $EP 2>/dev/null; wait $EP 2>/dev/null
  lab_figure "drill=$KILL failover_epoch=$FO_EPOCH first_diskrec=$FIRST primary_last_diskrec=$LASTP"
done
exit 0
