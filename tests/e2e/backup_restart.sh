#!/usr/bin/env bash
# e2e: kill -9 the backup in the middle of a run, then bring it back.
# Proves:
#   - the primary keeps running (the guest never stops), logs that it is
#     UNPROTECTED and keeps retrying;
#   - the image a SIGKILLed backup leaves behind is still an exact checkpoint
#     of the last epoch it committed (`romulus verify`, which changes no
#     file), i.e. commits are atomic on disk: a hard check, at any kill time;
#   - a backup restarted on the same image and port is found again: the primary
#     reconnects, resynchronises (full sync, resync_reason backup-reconnect),
#     and every epoch acked after that has a commit with the same digest;
#   - the run ends with a clean stop and a verified final image.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

make_key "$T/key"
port=$(free_port)
GUEST="sim:size=64M,workload=hotset"

start_backup b1 "$T/backup1.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$T/img" --events-json "$T/events1.json"
bg ppid "$T/primary.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$port" \
  --psk-file "$T/key" --interval 20ms --epochs 250 --stats-json "$T/stats.json"
wait_until 30 "backup commits epoch 40" commit_at_least "$T/events1.json" 40

kill9 "$b1"
killed_at=$(last_commit "$T/events1.json")
log "backup SIGKILLed after committing epoch $killed_at"
wait_until 10 "primary notices the backup is gone" grep -q "backup lost" "$T/primary.log"
alive "$ppid" || fail "the primary died when its backup was killed"
assert_grep "$T/primary.log" "backup lost: .*UNPROTECTED" "primary says it is unprotected"

# While the backup is down: the image it left must hold exactly one committed
# checkpoint, the last one it committed (or the one it was committing, if the
# SIGKILL landed after that commit's commit point): commits are journaled
# (docs/IMAGE-FORMAT.md). `romulus verify` is read-only and sees what a
# restart would recover, pending journal record included.
img_sums_before=$(md5sum "$T"/img* 2>/dev/null)
vout=$("$ROMULUS" verify --image "$T/img" 2>&1)
vrc=$?
[[ "$(md5sum "$T"/img* 2>/dev/null)" == "$img_sums_before" ]] ||
  check_fail "romulus verify changed the files of the killed backup's image"
kept_epoch=$(echo "$vout" | grep -Eo "epoch [0-9]+ is a consistent" | grep -Eo "[0-9]+")
if [[ $vrc -ne 0 || -z $kept_epoch ]]; then
  check_fail "image left by the killed backup holds no verifiable checkpoint: verify exited $vrc: $vout"
  kept_epoch=-1
elif [[ $kept_epoch -ne $killed_at && $kept_epoch -ne $((killed_at + 1)) ]]; then
  check_fail "image left by the killed backup holds epoch $kept_epoch, want $killed_at (or $((killed_at + 1)) if killed mid-commit)"
else
  log "image left by the killed backup: $vout"
fi
# Let the primary retry a few times (back-off 100 ms, 200 ms, ...).
wait_until 15 "primary logs at least two failed reconnects" \
  bash -c "[[ \$(grep -c 'UNPROTECTED: no backup' '$T/primary.log') -ge 2 ]]"
alive "$ppid" || fail "the primary died while its backup was down"
log "primary while the backup is down: $(grep 'UNPROTECTED: no backup' "$T/primary.log" | tail -n1)"
acked_before=$(jcheck last-acked "$T/stats.json")

# Same image, same port.
start_backup b2 "$T/backup2.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$T/img" --events-json "$T/events2.json"
assert_grep "$T/backup2.log" "image holds committed epoch $kept_epoch " \
  "restarted backup finds its committed epoch $kept_epoch"
log "restarted backup: $(grep -m1 "image holds committed epoch" "$T/backup2.log")"
wait_until 30 "primary reconnects and the new backup commits" has_event "$T/events2.json" commit
first_new=$(python3 -c 'import json,sys
print(min(json.loads(l)["epoch"] for l in open(sys.argv[1]) if "\"commit\"" in l))' "$T/events2.json")
log "resynchronised: first commit on the restarted backup is epoch $first_new (primary had $acked_before acked)"
[[ $first_new -gt $acked_before ]] ||
  check_fail "first epoch after the restart ($first_new) should follow the last acked one ($acked_before)"
assert_grep "$T/backup2.log" "first epoch [0-9]+ \(backup-reconnect\)" "HELLO says backup-reconnect"

wait_exit "$ppid" 60
[[ $EXIT_CODE -eq 0 ]] || check_fail "primary exited $EXIT_CODE"
wait_exit "$b2" 10
[[ $EXIT_CODE -eq 0 ]] || check_fail "restarted backup exited $EXIT_CODE"

resyncs=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    j=json.loads(l)
    if j.get("totals"): print(j["resyncs"])' "$T/stats.json")
[[ ${resyncs:-0} -ge 1 ]] || check_fail "primary's totals report $resyncs resyncs, want >= 1"
if out=$(jcheck join "$T/stats.json" "$T/events2.json" --from "$first_new" --require-stop --min-acked 50); then
  log "after the restart: $out"
else
  check_fail "after the restart: $out"
fi
# Before the kill, too, every acked digest matched (the epoch in flight when
# the backup died may be acked or not; join only demands acked => committed).
python3 - "$T/stats.json" "$T/stats-before.json" "$killed_at" <<'EOF'
import json, sys
with open(sys.argv[2], "w") as out:
    for l in open(sys.argv[1]):
        j = json.loads(l)
        if not j.get("totals") and j["epoch"] <= int(sys.argv[3]):
            out.write(l)
EOF
out=$(jcheck join "$T/stats-before.json" "$T/events1.json") || check_fail "before the kill: $out"
assert_no_crash "$T/backup1.log" "$T/backup2.log" "$T/primary.log"
verify_image "$T/img"
finish
