#!/usr/bin/env bash
# e2e: a full disk on the backup never activates the guest and never costs
# the checkpoint (issue 10, observation 3; docs/FAILURE-MODEL.md §5).
#
# The backup's image lives on a small tmpfs (mounted here; root needed):
#   firstsync  the tmpfs cannot hold even the first checkpoint: the backup
#              refuses with a local storage error, tells the primary (ERROR
#              resource), the primary reports UNPROTECTED with that reason, and
#              nothing crashes (no SIGBUS) or activates.
#   midrun     the tmpfs fills up after some commits: the commit in flight
#              fails, the backup keeps its last checkpoint and says so, the
#              primary reports UNPROTECTED; then the primary dies and the
#              backup still HOLDS (its checkpoint predates what the world saw)
#              instead of activating; `romulus verify` proves the image is
#              exactly the last committed checkpoint.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

MNT="$T/mnt"
mkdir -p "$MNT"
if ! mount -t tmpfs -o size=4m tmpfs "$MNT" 2>"$T/mount.err"; then
  echo "SKIP: disk_full: cannot mount a tmpfs here: $(cat "$T/mount.err")"
  finish
fi
trap 'umount -l "$MNT" 2>/dev/null; _e2e_cleanup' EXIT
make_key "$T/key"

status_has() {  # status_has SOCKET REGEX
  "$ROMULUS" ctl --json --socket "$1" status 2>/dev/null | grep -Eq "$2"
}

# ---- firstsync: 4 MiB of disk for a guest with 16 MiB of data
port=$(free_port)
start_backup bpid "$T/first-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$MNT/first.img" --events-json "$T/first-events.json"
bg ppid "$T/first-primary.log" "$ROMULUS" replicate --guest "sim:size=32M,workload=seed" \
  --to "127.0.0.1:$port" --psk-file "$T/key" --interval 50ms
wait_until 60 "firstsync: the primary reports the backup's storage failure" \
  grep -Eq "backup lost: .*resource: .*(No space left|space)" "$T/first-primary.log"
assert_grep "$T/first-primary.log" "UNPROTECTED" "firstsync: the primary says it is unprotected"
alive "$bpid" || check_fail "firstsync: the backup died on a full disk"
has_event "$T/first-events.json" commit && check_fail "firstsync: a commit was recorded on a full disk"
kill9 "$ppid"
kill -TERM "$bpid"
wait_exit "$bpid" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "firstsync: backup exited $EXIT_CODE (a signal? SIGBUS is 135)"
has_event "$T/first-events.json" failover && check_fail "firstsync: the backup activated"
assert_no_crash "$T/first-backup.log" "$T/first-primary.log"
rm -f "$MNT"/first.img*

# ---- midrun: commits work, then the disk fills up
umount "$MNT" && mount -t tmpfs -o size=64m tmpfs "$MNT" || fail "remounting the tmpfs"
port=$(free_port)
start_backup bpid "$T/mid-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$MNT/mid.img" --events-json "$T/mid-events.json" --control-socket "$T/mid.sock" \
  --failover-timeout 1s
# A workload that keeps touching pages never written before, so every commit
# needs new blocks (a fixed working set could live in blocks already allocated).
bg ppid "$T/mid-primary.log" "$ROMULUS" replicate --guest "sim:size=48M,workload=sequential" \
  --to "127.0.0.1:$port" --psk-file "$T/key" --interval 50ms
wait_until 60 "midrun: 10 commits" commit_at_least "$T/mid-events.json" 10
# Fill what is left of the tmpfs.
dd if=/dev/zero of="$MNT/filler" bs=1M 2>/dev/null
log "midrun: disk filled at epoch $(last_commit "$T/mid-events.json")"
wait_until 60 "midrun: the primary reports the backup's storage failure" \
  grep -Eq "backup lost: .*resource" "$T/mid-primary.log"
held=$(last_commit "$T/mid-events.json")
assert_grep "$T/mid-backup.log" "cannot commit epoch [0-9]+: .*; keeping epoch $held" \
  "midrun: the backup says which epoch it keeps"
alive "$bpid" || check_fail "midrun: the backup died on a full disk"
# The primary dies now. The backup must hold, and say why.
kill9 "$ppid"
wait_until 30 "midrun: the backup holds (status decision)" status_has "$T/mid.sock" '"decision":"hold"'
reason=$("$ROMULUS" ctl --json --socket "$T/mid.sock" status)
log "midrun: backup status: $reason"
[[ $reason == *storage* ]] || check_fail "midrun: the hold reason does not name the storage failure"
has_event "$T/mid-events.json" failover && check_fail "midrun: the backup ACTIVATED after a local failure"
kill -TERM "$bpid"
wait_exit "$bpid" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "midrun: backup exited $EXIT_CODE"
assert_no_crash "$T/mid-backup.log" "$T/mid-primary.log"
rm -f "$MNT/filler"
out=$("$ROMULUS" verify --image "$MNT/mid.img" 2>&1)
rc=$?
log "midrun: verify: $out"
[[ $rc -eq 0 ]] || check_fail "midrun: verify exited $rc: $out"
[[ $out == *"epoch $held "* ]] || check_fail "midrun: verify does not find exactly epoch $held: $out"
finish
