#!/bin/sh
#@ title: a guest with a replicated data disk fails over (SIGKILL at a random epoch, kill-points s2 and c, ext4 with fsync, after a backup restart that resynced only the changed regions, and back again from the activated guest with --reverse-to): its disk on the backup ends where its memory says, it writes on, fsck is clean; killed while its 1 GiB disk is still being copied, the backup does not activate
#@ guests: pv pvh
#@ runs: romulus
#@ skip-if: LAB_NO_DISK
#@ order: 47
# The chain: disk-export + nbd-client + blkback on the primary (as disk-scenario), restore
# --xen --disk-dir on the backup, replicate --domain --disk-tap. One drill per entry of
# $LAB_DISK_KILLS (default "random s2 c fs sync restart reverse"), each with a fresh guest, image and
# backup.
# Each session's first copy of the disk is streamed beside the running guest (DISK.md §7.1:
# at most 64 MiB an epoch; the backup's checkpoints are not resumable until it completes):
#   random  a 256 MiB disk (four times the export's log budget; sparse, so its holes travel as
#           ZERO records); SIGKILL the replicator once the copy completed and a random
#           number (6..13) of epochs were acked, then destroy the primary: the backup fails
#           over from an epoch ≥ the last acked one;
#   s2, c   `replicate --kill-at PHASE:K` (K = 20, after the 64 MiB copy completed): the
#           primary dies with the guest suspended (s2: the backup resumes from K-1) or after
#           EPOCH_END K, unacked (c: from K);
#   sync    a 1 GiB disk holding 64 MiB of data, copied at `--sync-rate 1M` (so over 64
#           epochs at least); SIGKILL the replicator after 2 acked epochs and destroy the
#           primary; the first law: the backup must hold (no failover, its decision naming
#           the copy) and run no copy of the guest;
#   restart as random, but first the backup is SIGKILLed (after the copy and 6 acked epochs) and
#           started again on its images while the guest writes on: the restarted backup holds
#           no replica (memory comes whole) but names what its image holds (DISK.md §7.2), and
#           the primary must copy only the regions changed since: at least one (the guest
#           wrote meanwhile), at most 256 of the disk's 1024, never the whole disk;
#   reverse as random, but the backup runs with --reverse-to a second backup (restore --xen
#           --disk-dir DIR2 --domain-name G--back): at the activation it serves the image through
#           its own disk export and nbd-client (DISK.md §8b) and replicates the guest, disk
#           included, to the second backup, started after the primary died on a copy of the
#           primary's own disk, as the old primary's host would hold it: the copy is whole (the
#           image is of another lineage) but leaves out the chunks that image holds already
#           (DISK_DIGESTS, DISK.md §7.4: at least one byte left out, counted). After 6
#           resumable commits there the reversed primary is SIGKILLed (its
#           export must live on) and the guest destroyed: the second backup, fenced until
#           then, fails over. The checks below then apply to that second failover
#           (its resumed guest, its image);
#   fs      as random, but the disk holds ext4 and the guest appends the records to a file with
#           fsync (labdisk fswrite), 120 at 300 ms, then unmounts: the resumed guest must finish and
#           unmount, the backup's image must pass `e2fsck -fn` (no journal to replay, no error)
#           and its file hold exactly records 1..120 (read out with debugfs).
# LAB_BACKUP_ARGS (by hand, e.g. "--max-disk-staging 64K"): more flags for each drill's backup.
# Then, for each: the resumed guest must write on (DISKREC past the primary's last, never a
# DISKERR), its first DISKREC be at most the primary's last + 1 (its memory never believes
# less than the checkpoint holds), and the backup's image hold records 1..L with no hole, no
# bad record, nothing beyond L or L+1 (L: the resumed guest's last DISKREC; +1: a write in
# flight when it was destroyed).
. /lab/dom0-lib.sh
W=$LAB_WORK; NBD=/dev/nbd0; K=20; FSMAX=120
dl() { _v=$(tr -d '\r' <"$1" 2>/dev/null | sed -n "s/.*${REC}REC \([0-9][0-9]*\).*/\1/p" | tail -n1); echo "${_v:-0}"; }
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/psk"; chmod 600 "$W/psk"
PORT=7310
# The epoch whose commit completed the primary's copy of the disk (empty before).
copied() { sed -n 's/.*copy to the backup complete with epoch \([0-9]*\).*/\1/p' "$1" | head -n1; }
# wait_acked N [copied]: until N epochs were acked (with "copied": and the primary's copy
# of the disk completed); kill_after_acked N [copied]: then SIGKILL the replicator.
kill_after_acked() {
  wait_acked "$@"
  kill -9 $RP
  wait $RP
}
wait_acked() {
  until [ "$(rj_count "$D/stats.jsonl" acked true)" -ge "$1" ] 2>/dev/null &&
    { [ -z "${2:-}" ] || [ -n "$(copied "$D/primary.log")" ]; }; do
    kill -0 $RP 2>/dev/null || lab_fail "$KILL: replicator exited: $(grep -E ' (error|critical) ' "$D/primary.log" | tail -n1 | cut -c1-300)"
    [ "$(lab_elapsed "$T0" | cut -d. -f1)" -lt 600 ] || lab_fail "$KILL: no $1 acked epochs${2:+ with the disk copied}"
    sleep 0.2
  done
}
start_backup() {
  romulus restore --xen --no-fence --listen "127.0.0.1:$PORT" --psk-file "$W/psk" --failover-timeout 2s \
    --disk-dir "$D/disks" --events-json "$D/events.jsonl" $REVERSE ${LAB_BACKUP_ARGS:-} >"$D/backup.log" 2>&1 &
  BP=$!
  lab_evidence "$D/backup.log" "$D/events.jsonl" "$D/primary.log"
  lab_wait_listening "$D/backup.log" $BP
}
# resumed_console: the resumed guest's console into $C2 (the reverse drill's second copy:
# its own log, then G's after line MP).
resumed_console() {
  if [ -n "$MP" ]; then
    : >"$C2"; cat "$(lab_console $G--back)" >>"$C2" 2>/dev/null
    [ "$(lab_lines "$(lab_console $G)")" -le "$MP" ] || tail -n +$((MP + 1)) "$(lab_console $G)" >>"$C2"
  else
    lab_replica_console $G "$C1N" "$C2"
  fi
}
# The reverse drill's second hop: see the header. Leaves C2, LASTP, FIRST, IMGDIR and BP
# describing the second failover, for the checks that follow.
reverse_hop() {
  [ -n "$FIRST" ] && [ "$FIRST" -le $((LASTP + 1)) ] || lab_fail "reverse: first hop: resumed guest's first DISKREC '$FIRST' is not within the primary's last $LASTP + 1"
  SERVED=$(grep -m1 'served by a disk export' "$D/backup.log")
  [ -n "$SERVED" ] || lab_fail "reverse: the backup did not serve the disk through an export: $(grep -E ' (error|warning) ' "$D/backup.log" | tail -n 2 | cut -c1-300)"
  XP=$(echo "$SERVED" | sed -n 's/.*served by a disk export (pid \([0-9]*\)) on \(\/dev\/nbd[0-9]*\).*/\1/p')
  XDEV=$(echo "$SERVED" | sed -n 's/.*served by a disk export (pid [0-9]*) on \(\/dev\/nbd[0-9]*\).*/\1/p')
  [ -n "$XP" ] && [ -n "$XDEV" ] || lab_fail "reverse: cannot read the export's pid and device: $(echo "$SERVED" | cut -c1-300)"
  lab_note "reverse: $(echo "$SERVED" | sed 's/.*\] //' | cut -c1-250)"
  # the backup raised the device's request size itself (disk::RaiseNbdMaxRequest, DISK.md §8b)
  MSK=$(cat "/sys/block/${XDEV#/dev/}/queue/max_sectors_kb" 2>/dev/null)
  [ "$MSK" -ge 1024 ] 2>/dev/null || lab_fail "reverse: $XDEV takes requests of '$MSK' KiB, want at least 1024 (the backup raises it): $(grep -m1 -E 'requests (of up to|stay)' "$D/backup.log" | cut -c1-200)"
  T=$(lab_now)
  until [ "$(grep '"event":"commit"' "$D/events2.jsonl" 2>/dev/null | grep -vc not_resumable)" -ge 6 ]; do
    kill -0 $BP 2>/dev/null || lab_fail "reverse: the reversed primary exited: $(grep -E ' (error|critical) ' "$D/backup.log" | tail -n1 | cut -c1-300)"
    [ "$(lab_elapsed "$T" | cut -d. -f1)" -lt 240 ] || lab_fail "reverse: no 6 resumable commits on the second backup: $(tail -n 2 "$D/backup2.log" | cut -c1-300)"
    sleep 0.2
  done
  grep -q "copy to the backup complete" "$D/backup.log" || lab_fail "reverse: the reversed primary never completed its copy of the disk"
  # Its export compared the copy with the old primary's disk: most of it was left out.
  LEFT=$(cat "$D"/disks/*.export.log 2>/dev/null | grep -m1 'streaming copy complete with tag')
  LEFTB=$(echo "$LEFT" | sed -n 's/.*: \([0-9]*\) of \([0-9]*\) left out.*/\1/p')
  LEFTT=$(echo "$LEFT" | sed -n 's/.*: \([0-9]*\) of \([0-9]*\) left out.*/\2/p')
  [ -n "$LEFTB" ] && [ "$LEFTB" -gt 0 ] || lab_fail "reverse: the reversed primary's copy left nothing out of the old primary's disk: '$(echo "$LEFT" | cut -c1-250)' $(grep -m1 'described' "$D/backup2.log" | cut -c1-200)"
  lab_note "reverse: the copy to the old primary's disk left out $((LEFTB >> 20)) of $((LEFTT >> 20)) MiB (the rest differed: the guest's writes since the checkpoint and the old primary's beyond it)"
  COMMITTED2=$(grep '"event":"commit"' "$D/events2.jsonl" | grep -v not_resumable | tail -n1 | sed -n 's/.*"epoch":\([0-9]*\).*/\1/p')
  D1ID=$(sed -n 's/.*(domid \([0-9]*\)) running from epoch.*/\1/p' "$D/backup.log" | head -n1)
  [ -n "$D1ID" ] || lab_fail "reverse: no activated domid in the first backup's log"
  kill -9 $BP; wait $BP 2>/dev/null
  # The guest's disk must not die with its replicator. (Whether the guest runs on is not
  # asked: a replicator killed inside a checkpoint leaves it suspended, to be resumed by the
  # next replicate. It is destroyed at once, as in every drill; the second backup's fence
  # waits for that.)
  kill -0 "$XP" 2>/dev/null || lab_fail "reverse: the disk export (pid $XP) died with the reversed primary"
  lab_replica_console $G "$C1N" "$C2"
  [ "$(grep -c DISKERR "$C2")" -eq 0 ] || lab_fail "reverse: first hop: $(grep -m1 DISKERR "$C2" | tr -d '\r')"
  xl destroy "$D1ID" >/dev/null 2>&1
  xl list "$D1ID" >/dev/null 2>&1 && lab_fail "reverse: the first hop's guest (domid $D1ID) survived xl destroy"
  rm -f "$D/hop1-alive"
  lab_replica_console $G "$C1N" "$C2"; LASTP=$(dl "$C2")
  MP=$(lab_lines "$(lab_console $G)")
  lab_wait_failover "$D/events2.jsonl" "$D/backup2.log"
  FO2=$(rj_get "$LAB_FO" last_committed_epoch)
  [ "$FO2" -ge "$COMMITTED2" ] || lab_fail "reverse: the second backup resumed from epoch $FO2, before its committed $COMMITTED2"
  lab_note "reverse: second backup committed $(grep -c '"event":"commit"' "$D/events2.jsonl") epochs ($(grep -c not_resumable "$D/events2.jsonl") during the copy); first hop's guest last DISKREC $LASTP; resumed from epoch $FO2"
  # The second copy's console: its own log before the rename, then G's log after line MP.
  C2=$D/backup2-console.log; T=$(lab_now)
  until resumed_console; [ "$(dl "$C2")" -ge $((LASTP + 5)) ]; do
    [ "$(lab_elapsed "$T" | cut -d. -f1)" -lt 240 ] || { tail -n 20 "$C2"; lab_fail "reverse: second resumed guest: DISKREC $(dl "$C2")"; }
    sleep 0.5
  done
  FIRST=$(tr -d '\r' <"$C2" | sed -n "s/.*DISKREC \([0-9][0-9]*\).*/\1/p" | head -n1)
  IMGDIR=$D/disks2
  BP=$BP2
  FO_EPOCH=$FO2
  lab_figure "drill=reverse export_device=$XDEV second_commits=$(grep -c '"event":"commit"' "$D/events2.jsonl") second_failover_epoch=$FO2 left_out_bytes=$LEFTB of=$LEFTT"
}
for KILL in ${LAB_DISK_KILLS:-random s2 c fs sync restart reverse}; do
  case $KILL in random|s2|c|sync|restart|reverse) REC=DISK ;; fs) REC=FS ;; *) lab_fail "LAB_DISK_KILLS: unknown drill $KILL (random, s2, c, fs, sync, restart, reverse)" ;; esac
  case $KILL in random) SIZE=256M ;; sync) SIZE=1G ;; *) SIZE=64M ;; esac
  G=guest7-$KILL; D=$W/$KILL; PORT=$((PORT + 1)); IMGDIR=$D/disks; REVERSE=""; BP2=""; MP=""
  mkdir -p "$D/disks"
  IMG=$D/xvdb.img; SOCK=$D/nbd.sock; TAP=$D/tap.sock
  truncate -s $SIZE "$IMG"
  RATE=64M
  if [ $KILL = sync ]; then
    # Data the copy must read (holes are free): 64 MiB at 1 MiB an epoch.
    dd if=/dev/urandom of="$IMG" bs=1M count=64 conv=notrunc >/dev/null 2>&1 || lab_fail "sync: filling the image"
    RATE=1M
  fi
  if [ $REC = FS ]; then
    /lab/e2fs/mke2fs -F -q -t ext4 "$IMG" >"$D/mkfs.log" 2>&1 || lab_fail "fs: mke2fs: $(cat "$D/mkfs.log")"
    WORK="lab_fs=/dev/xvdb lab_fs_ms=300 lab_fs_max=$FSMAX"
  else
    WORK="lab_disk=/dev/xvdb lab_disk_ms=300 lab_disk_max=0"
  fi
  romulus disk-export --store "$IMG" --name xvdb --nbd-socket "$SOCK" --tap-socket "$TAP" --sync-rate $RATE \
    >"$D/export.log" 2>&1 &
  EP=$!
  LAB_EVIDENCE=""
  lab_evidence "$D/export.log"
  i=0; until grep -q ready "$D/export.log"; do i=$((i+1)); [ $i -le 300 ] || lab_fail "$KILL: export not ready"; sleep 0.1; done
  nbd-client -unix "$SOCK" "$NBD" -N xvdb >"$D/nbdc.log" 2>&1 || lab_fail "$KILL: nbd-client: $(cat "$D/nbdc.log")"
  lab_nbd_requests "$NBD"
  rm -f "$(lab_console $G)" "$(lab_console $G--incoming)" "$(lab_console $G--back)"
  LAB_GUEST_DISK="backendtype=phy, format=raw, vdev=xvdb, access=rw, script=/lab/block-lab, target=$NBD" \
    lab_guest_create $G "$LAB_GUEST_MEM" 1 "$WORK" >"$D/domid" || lab_fail "$KILL: create"
  P=$(cat "$D/domid"); C1=$(lab_console $G)
  i=0; until [ "$(dl "$C1")" -ge 5 ]; do i=$((i+1)); [ $i -le 1200 ] || lab_fail "$KILL: no 5 records"; sleep 0.2; done
  if [ $KILL = reverse ]; then
    mkdir -p "$D/disks2"; PORT2=$((PORT + 50)); REVERSE="--reverse-to 127.0.0.1:$PORT2"
    # The second backup's fence: the first hop's guest gone (the drill removes HOP1 once it
    # destroyed it), so it never runs a second live copy, however the kill and the destroy
    # are timed.
    : >"$D/hop1-alive"
    printf '#!/bin/sh\nwhile [ -e %s/hop1-alive ]; do sleep 0.2; done\n' "$D" >"$D/fence.sh"; chmod +x "$D/fence.sh"
  fi
  start_backup
  KILLAT=""; case $KILL in s2|c) KILLAT="--kill-at $KILL:$K" ;; esac
  romulus replicate --domain $G --disk-tap "$TAP" --to "127.0.0.1:$PORT" --psk-file "$W/psk" --interval 100ms \
    --ack-timeout 15s $KILLAT --stats-json "$D/stats.jsonl" >"$D/primary.log" 2>&1 &
  RP=$!
  T0=$(lab_now)
  if [ "$KILL" = sync ]; then
    # ---- the first law while the copy runs: 2 acked epochs carry at most 2 of its 64 MiB
    kill_after_acked 2
    [ -z "$(copied "$D/primary.log")" ] || lab_fail "sync: the copy completed with epoch $(copied "$D/primary.log"), before the kill: the drill proves nothing"
    xl destroy "$P" >/dev/null 2>&1
    lab_evidence "$D/events.jsonl"
    i=0
    until rj_events "$D/events.jsonl" decision | grep '"decision":"hold"' | grep -q 'still being copied'; do
      i=$((i+1)); [ $i -le 300 ] || lab_fail "sync: the backup never decided to hold, naming the copy"
      sleep 0.2
    done
    [ "$(rj_event_count "$D/events.jsonl" failover)" -eq 0 ] || lab_fail "sync: the backup failed over with a partial disk: $(rj_first_event "$D/events.jsonl" failover)"
    xl list | grep -E "^$G( |--)" | grep -v -- '--incoming' | grep -q . && lab_fail "sync: a copy of $G runs on the backup: $(xl list | grep "$G")"
    WHY=$(rj_events "$D/events.jsonl" decision | grep '"decision":"hold"' | grep 'still being copied' | head -n1)
    lab_note "sync: killed after 2 acked epochs of a 1 GiB copy (64 MiB of data at 1 MiB an epoch); the backup holds: $(rj_get "$WHY" why | cut -c1-200)"
    lab_figure "drill=sync activated=0 commits_not_resumable=$(grep -c not_resumable "$D/events.jsonl")"
    kill $BP 2>/dev/null; wait $BP 2>/dev/null
    xl destroy $G--incoming >/dev/null 2>&1
    nbd-client -d $NBD >/dev/null 2>&1
    kill $EP 2>/dev/null; wait $EP 2>/dev/null
    continue
  elif [ "$KILL" = restart ]; then
    # ---- a backup restarted under the running primary: only the changed regions
    wait_acked 6 copied
    kill -9 $BP; wait $BP 2>/dev/null
    mv "$D/backup.log" "$D/backup1.log"; mv "$D/events.jsonl" "$D/events1.jsonl"
    LAST1=$(dl "$C1"); i=0
    until [ "$(dl "$C1")" -ge $((LAST1 + 3)) ]; do i=$((i+1)); [ $i -le 600 ] || lab_fail "restart: the guest stopped writing"; sleep 0.2; done
    ACK1=$(rj_count "$D/stats.jsonl" acked true)
    start_backup
    i=0
    until grep -qE "disk xvdb: the backup holds it as of tag|copying it whole" "$D/primary.log"; do
      i=$((i+1)); [ $i -le 1200 ] || lab_fail "restart: the primary never resynced the restarted backup: $(tail -n 3 "$D/primary.log" | cut -c1-200)"
      kill -0 $RP 2>/dev/null || lab_fail "restart: replicator exited: $(grep -E ' (error|critical) ' "$D/primary.log" | tail -n1 | cut -c1-300)"
      sleep 0.2
    done
    grep -q "copying it whole" "$D/primary.log" && lab_fail "restart: the disk was copied whole: $(grep -m1 'copying it whole' "$D/primary.log" | cut -c1-300)"
    LINE=$(grep -m1 "disk xvdb: the backup holds it as of tag" "$D/primary.log")
    REGIONS=$(echo "$LINE" | sed -n 's/.*copying the \([0-9]*\) region.*/\1/p')
    [ -n "$REGIONS" ] && [ "$REGIONS" -ge 1 ] && [ "$REGIONS" -le 256 ] ||
      lab_fail "restart: $REGIONS regions resynced (want 1..256 of 1024): $(echo "$LINE" | cut -c1-250)"
    lab_note "restart: $(echo "$LINE" | sed 's/.*disk xvdb: //' | cut -c1-200)"
    lab_figure "drill=restart resync_regions=$REGIONS of=1024"
    kill_after_acked $((ACK1 + 6))
    # The second session carried no streaming copy: one completed copy in the log, the first.
    [ "$(grep -c 'copy to the backup complete' "$D/primary.log")" -eq 1 ] ||
      lab_fail "restart: the restarted backup got a streaming copy: $(grep 'copy to the backup complete' "$D/primary.log" | tail -n1 | cut -c1-200)"
  elif [ "$KILL" = random ] || [ "$KILL" = fs ] || [ "$KILL" = reverse ]; then
    kill_after_acked $((6 + $(od -An -N1 -tu1 /dev/urandom) % 8)) copied
  else
    while kill -0 $RP 2>/dev/null; do
      [ "$(lab_elapsed "$T0" | cut -d. -f1)" -lt 600 ] || lab_fail "$KILL: the primary never reached epoch $K"
      sleep 0.2
    done
    wait $RP; RC=$?
    [ "$RC" -eq 137 ] || lab_fail "$KILL: the primary exited $RC, not by its kill-point"
    grep -q "drill: killing the primary at .* of epoch $K" "$D/primary.log" || lab_fail "$KILL: no kill-point line for epoch $K"
  fi
  W_COPY=$(copied "$D/primary.log")
  [ -n "$W_COPY" ] || lab_fail "$KILL: the primary never completed its copy of the disk: $(grep -m1 'copying to the backup' "$D/primary.log" | cut -c1-200)"
  case $KILL in s2|c) [ "$W_COPY" -lt $((K - 1)) ] || lab_fail "$KILL: the copy completed only with epoch $W_COPY, not before the kill-point's epoch $K" ;; esac
  xl destroy "$P" >/dev/null 2>&1
  if [ $KILL = reverse ]; then
    # The second backup is the old primary's host, in a real pair: its disk is the primary's
    # own, with the writes beyond the checkpoint. The reversed primary's copy leaves out the
    # chunks it holds already (DISK_DIGESTS, DISK.md §7.4) and must overwrite the rest.
    # (Started now, after the primary is gone; the reversed primary retries until it listens.)
    cp --sparse=always "$IMG" "$D/disks2/$G--back.xvdb.img"
    romulus restore --xen --fence-cmd "$D/fence.sh" --fence-timeout 120s \
      --listen "127.0.0.1:$PORT2" --psk-file "$W/psk" --failover-timeout 2s \
      --disk-dir "$D/disks2" --domain-name $G--back --events-json "$D/events2.jsonl" >"$D/backup2.log" 2>&1 &
    BP2=$!
    lab_evidence "$D/backup2.log" "$D/events2.jsonl"
    lab_wait_listening "$D/backup2.log" $BP2
  fi
  C1N=$(lab_lines "$C1")
  LASTP=$(dl "$C1")
  ACKED=$(rj_last_acked "$D/stats.jsonl")
  lab_wait_failover "$D/events.jsonl" "$D/backup.log"
  FO_EPOCH=$(rj_get "$LAB_FO" last_committed_epoch)
  case $KILL in
    random|fs|restart|reverse) [ "$FO_EPOCH" -ge "$ACKED" ] || lab_fail "$KILL: the backup resumed from epoch $FO_EPOCH, before the acked $ACKED" ;;
    s2) [ "$FO_EPOCH" = $((K - 1)) ] || lab_fail "s2: the backup resumed from epoch $FO_EPOCH, want $((K - 1))" ;;
    c) [ "$FO_EPOCH" = $K ] || lab_fail "c: the backup resumed from epoch $FO_EPOCH, want $K" ;;
  esac
  lab_note "$KILL: $SIZE disk copied by epoch $W_COPY; primary dead after $ACKED acked epochs, last ${REC}REC $LASTP; backup resumed from epoch $FO_EPOCH"
  C2=$D/backup-console.log; T=$(lab_now)
  # The resumed guest writes 5 more records (fs: writes them all and unmounts).
  until lab_replica_console $G "$C1N" "$C2"
    if [ $REC = FS ]; then grep -q FSUMOUNTED "$C2" || grep -q FSERR "$C2"; else [ "$(dl "$C2")" -ge $((LASTP + 5)) ]; fi; do
    [ "$(lab_elapsed "$T" | cut -d. -f1)" -lt 240 ] || { tail -n 20 "$C2"; lab_fail "$KILL: resumed guest: ${REC}REC $(dl "$C2")"; }
    sleep 0.5
  done
  FIRST=$(tr -d '\r' <"$C2" | sed -n "s/.*${REC}REC \([0-9][0-9]*\).*/\1/p" | head -n1)
  grep -iE 'opened by blkback' "$D/backup.log" | tail -n 2 | cut -c1-250 | sed "s/^/LAB-NOTE $LAB_SCENARIO $KILL backup: /"
  # Epochs staged past --max-disk-staging (DISK.md §6.2): how many spilled, if any.
  SPILLS=$(grep -c 'holds more than the .* bytes staged in memory; the rest is spilled' "$D/backup.log")
  [ "$SPILLS" -eq 0 ] || lab_note "$KILL: the backup spilled an epoch's disk data beyond its memory bound: $(grep -m1 'the rest is spilled' "$D/backup.log" | sed 's/.*disk staging: //' | cut -c1-160)"
  [ $KILL = reverse ] && reverse_hop
  xl destroy $G >/dev/null 2>&1
  [ $KILL = reverse ] && xl destroy $G--back >/dev/null 2>&1
  # The console as of the destruction, not of the last look: the guest wrote on meanwhile.
  resumed_console; L2=$(dl "$C2")
  [ "$(grep -c ${REC}ERR "$C2")" -eq 0 ] || lab_fail "$KILL: resumed guest: $(grep -m1 ${REC}ERR "$C2" | tr -d '\r')"
  [ -n "$FIRST" ] && [ "$FIRST" -le $((LASTP + 1)) ] || lab_fail "$KILL: resumed guest's first ${REC}REC '$FIRST' is not within the primary's last $LASTP + 1"
  n=0
  for f in "$IMGDIR"/*.img; do
    n=$((n + 1))
    if [ $REC = FS ]; then
      grep -q "FSUMOUNTED rc=0" "$C2" || lab_fail "fs: the resumed guest did not finish and unmount: $(grep -m1 FSUMOUNTED "$C2")"
      /lab/e2fs/e2fsck -fn "$f" >"$D/fsck.log" 2>&1; rc=$?
      [ $rc -eq 0 ] || { cat "$D/fsck.log"; lab_fail "fs: e2fsck -fn of the backup's image: exit $rc"; }
      lab_note "fs: e2fsck -fn: $(tail -n1 "$D/fsck.log")"
      /lab/e2fs/debugfs -R "dump /records $D/records" "$f" >"$D/debugfs.log" 2>&1 && [ -s "$D/records" ] ||
        lab_fail "fs: no /records in the backup's image: $(cat "$D/debugfs.log")"
      f=$D/records
    fi
    out=$(labdisk check "$f" 2>&1) || lab_fail "$KILL: backup image $f: $out"
    last=$(echo "$out" | sed -n 's/.*last=\([0-9]*\).*/\1/p')
    if [ $REC = FS ]; then
      [ "$last" = $FSMAX ] && [ "$L2" = $FSMAX ] || lab_fail "fs: the file's last record is $last, the guest's last FSREC $L2, want $FSMAX"
    else
      # xenconsoled writes a line to the log a little after the guest printed it: a record
      # the image holds beyond the console's last + 1 may still be on its way there (5 s).
      i=0
      while [ "$last" -gt $((L2 + 1)) ] && [ $i -lt 25 ]; do sleep 0.2; resumed_console; L2=$(dl "$C2"); i=$((i + 1)); done
      case $last in "$L2"|"$((L2 + 1))") ;; *) lab_fail "$KILL: backup image $f: last=$last, the resumed guest's last DISKREC $L2" ;; esac
    fi
    lab_note "$KILL: resumed guest's ${REC}REC $FIRST..$L2; backup image: $out"
  done
  [ $n -eq 1 ] || lab_fail "$KILL: $n images in $IMGDIR, want 1"
  kill $BP 2>/dev/null; wait $BP 2>/dev/null
  nbd-client -d $NBD >/dev/null 2>&1
  kill $EP 2>/dev/null; wait $EP 2>/dev/null
  if [ $KILL = reverse ]; then
    # The first backup's export outlives every romulus process: the operator's to stop.
    nbd-client -d "$XDEV" >/dev/null 2>&1
    kill "$XP" 2>/dev/null
  fi
  lab_figure "drill=$KILL disk=$SIZE copy_complete_epoch=$W_COPY failover_epoch=$FO_EPOCH first_rec=$FIRST primary_last_rec=$LASTP resumed_last_rec=$L2"
done
exit 0
