#!/usr/bin/env bash
# e2e (issue 13, docs/DISK.md §7.2): a backup restarted under a running
# primary resyncs only the disk regions that changed, and a backup holding an
# older copy than the primary can account for gets the whole disk.
#
# A simulated guest with a 64 MiB disk (1024 regions of 64 KiB) whose writer
# appends records while it runs:
# 1. backup b1 takes the first copy (streamed), commits; SIGKILL b1.
# 2. b2 restarts on b1's image: its HELLO_ACK names the lineage and tag its
#    committed disk holds, and the primary copies only the regions written
#    since (the count is in its log; it must be at least one, since the
#    writer ran meanwhile, and far from the whole disk). Its first commit is
#    resumable at once (no streaming copy). SIGKILL b2.
# 3. b3 restarts on a copy of the image taken before b2 ran: it holds an
#    older tag than the primary kept changes for (b2's acks let it forget
#    them), so the primary must not patch it with a delta: it copies the disk
#    whole. The HELLO's change floor (kCapDiskFloor, docs/DISK.md §7.4)
#    tells b3 so, and b3 describes its copy: the whole copy leaves out the
#    chunks b3 holds already (most of the disk). b3 stages only 64 KiB of an epoch in memory
#    (--max-disk-staging 64K, less than the records b2 already held): that copy spills to a file beside its image
#    (docs/DISK.md §6.2) and must still commit as one checkpoint.
# Each step ends with `romulus verify`: memory and disk are the same
# checkpoint, every record the memory believes written is on the disk, none
# beyond. A delta that missed a region fails there. Finally the primary is
# SIGKILLed and b3 fails over to a checkpoint that verifies.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

GUEST="sim:size=16M,workload=seed,disk=64M"
make_key "$T/key"
port=$(free_port)
events_n() { rj_event_count "$1" commit; }
regions_line() { grep -E "disk xvda: the backup holds it as of tag [0-9]+: copying the [0-9]+ region" "$T/primary.log"; }

start_backup b1 "$T/backup1.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$T/img" --events-json "$T/events1.json"
bg ppid "$T/primary.log" "$ROMULUS" replicate --guest "$GUEST" --sim-disk "$T/primary.disk" \
  --to "127.0.0.1:$port" --psk-file "$T/key" --interval 20ms --control-socket "$T/p.sock"
wait_until 60 "the first copy completes" grep -q "copy to the backup complete" "$T/primary.log"
wait_until 30 "b1 commits 20 epochs" commit_at_least "$T/events1.json" 20
kill9 "$b1"
wait_until 10 "the primary notices b1 is gone" grep -q "backup lost" "$T/primary.log"
verify_image "$T/img" || fail "b1's image"
mkdir -p "$T/old"
cp --sparse=always "$T"/img* "$T/old/"
b1_epoch=$(last_commit "$T/events1.json")
log "b1 killed after committing epoch $b1_epoch; its image kept aside"
# Let the writer write while no backup is there.
wait_until 15 "the primary retries twice" bash -c "[[ \$(grep -c 'UNPROTECTED: no backup' '$T/primary.log') -ge 2 ]]"

# ---- 2. same image: only the changed regions
start_backup b2 "$T/backup2.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$T/img" --events-json "$T/events2.json"
wait_until 30 "b2 commits 20 epochs" bash -c "[[ \$(grep -c '\"event\":\"commit\"' '$T/events2.json') -ge 20 ]]"
line=$(regions_line | tail -n1)
[[ -n $line ]] || fail "the primary did not copy changed regions only to b2: $(grep -E 'disk xvda' "$T/primary.log" | tail -n3)"
regions=$(sed -E 's/.*copying the ([0-9]+) region.*/\1/' <<<"$line")
log "b2: $line"
[[ $regions -ge 1 ]] || check_fail "b2: $regions regions copied, but the writer wrote while b2 was down"
[[ $regions -le 256 ]] || check_fail "b2: $regions of 1024 regions copied: not a resync of what changed"
# The status says the same, for an operator's tools.
rj_ctl "$T/p.sock" status >/dev/null || check_fail "ctl status: $RJ_ERROR"
st_regions="$(rj_get "$RJ_REPLY" disks.resync_regions) $(rj_get "$RJ_REPLY" disks.copied_whole) $(rj_get "$RJ_REPLY" disks.copy_permille)"
[[ $st_regions == "$regions 0 1000" ]] || check_fail "b2: ctl status disks says '$st_regions', want '$regions 0 1000'"
grep -q "copying it whole" "$T/primary.log" && check_fail "b2: a disk was copied whole: $(grep 'copying it whole' "$T/primary.log")"
first2=$(grep -m1 -F '"event":"commit"' "$T/events2.json")
grep -qF not_resumable <<<"$first2" && check_fail "b2's first commit is not resumable: $first2"
kill9 "$b2"
wait_until 10 "the primary notices b2 is gone" bash -c "[[ \$(grep -c 'backup lost' '$T/primary.log') -ge 2 ]]"
verify_image "$T/img" || fail "b2's image"

# ---- 3. an older copy than the primary kept changes for: the whole disk
cp --sparse=always "$T"/old/img* "$T/"
start_backup b3 "$T/backup3.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$T/img" --events-json "$T/events3.json" --failover-timeout 1s --max-disk-staging 64K
# (b1's last commit event may be one short: killed after the commit point of the
# next epoch, whose event it never wrote; verify above saw which.)
assert_grep "$T/backup3.log" "image holds committed epoch ($b1_epoch|$((b1_epoch + 1))) " "b3 finds b1's last epoch"
grep -q "image holds committed epoch $((b1_epoch + 1)) " "$T/backup3.log" && log "b1 had committed epoch $((b1_epoch + 1)) too (killed after its commit point)"
wait_until 30 "b3 commits 10 epochs" bash -c "[[ \$(grep -c '\"event\":\"commit\"' '$T/events3.json') -ge 10 ]]"
assert_grep "$T/primary.log" "disk xvda: the backup holds it as of tag [0-9]+, but .*are not known.*copying it whole" \
  "b3 (older than the primary's changes reach) gets the whole disk"
[[ $(regions_line | wc -l) -eq 1 ]] || check_fail "b3 got a copy of changed regions: $(regions_line | tail -n1)"
assert_grep "$T/backup3.log" "disk xvda: held as of tag [0-9]+, older than the primary's changes reach \\(tag [0-9]+\\): describing it" \
  "b3 describes its copy, older than the primary's changes reach"
line=$(grep -E "disk xvda: the backup's copy held .* of its 64 MiB already" "$T/primary.log" | tail -n1)
[[ -n $line ]] || check_fail "b3's whole copy was not compared with what b3 holds: $(grep -E 'disk xvda' "$T/primary.log" | tail -n3)"
held=$(sed -E "s/.*copy held ([0-9]+)(\.[0-9]+)? MiB of its.*/\1/" <<<"$line")
log "b3: $line"
[[ $held =~ ^[0-9]+$ && $held -ge 32 ]] || check_fail "b3: only '$held' MiB of 64 left out of the whole copy; the writer changed far less"
assert_grep "$T/backup3.log" "disk staging: epoch [0-9]+ holds more than the 65536 bytes staged in memory; the rest is spilled to $T" \
  "b3 spills the whole copy beyond its 64 KiB of staging memory"
ls -A "$T" | grep -q romulus-spill && check_fail "a spill file was left in $T: $(ls -A "$T" | grep romulus-spill)"

# ---- the primary dies: b3 fails over to a checkpoint that verifies
kill9 "$ppid"
wait_event "$T/events3.json" failover 20 || fail "b3 did not fail over"
wait_exit "$b3" 30
assert_no_crash "$T/backup1.log" "$T/backup2.log" "$T/backup3.log"
verify_image "$T/img"
finish
