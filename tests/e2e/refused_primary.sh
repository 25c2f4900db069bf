#!/usr/bin/env bash
# e2e: the guest's primary comes back and the backup refuses it
# (docs/FAILURE-MODEL.md §4, "A refused primary").
#
# The backup holds a committed checkpoint; the primary's connection is lost
# (SIGKILL); a primary of the same guest connects again with a HELLO this
# backup refuses (here its page cache exceeds --max-cache-size; in the field
# a newer Xen than the backup's, kCapXenRelease). That primary is alive and
# runs the guest unprotected: the backup must hold, not activate its older
# checkpoint when the failover timeout of silence has passed, and say why.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

GUEST="sim:size=8M,workload=hotset"
bport=$(free_port)
start_backup bpid "$T/backup.log" --listen "127.0.0.1:$bport" --insecure --image "$T/img" \
  --events-json "$T/events.json" --failover-timeout 1s --max-cache-size 1M --control-socket "$T/b.sock"

# 1. A primary within the backup's limits commits, then dies.
bg p1 "$T/primary1.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$bport" --insecure \
  --interval 20ms --cache-size 512K
wait_until 30 "the first primary commits" commit_at_least "$T/events.json" 5
kill -9 "$p1"
wait_exit "$p1" 10
held=$(last_commit "$T/events.json")
log "primary 1 killed; the backup holds epoch $held (or one more)"

# 2. The same guest's primary again, at once, asking for a cache the backup
# refuses: it keeps retrying and keeps being refused.
bg p2 "$T/primary2.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$bport" --insecure \
  --interval 20ms --cache-size 4M
wait_until 30 "the backup refuses the returning primary" grep -q "refused the primary of guest" "$T/backup.log"

# The judge holds, naming the refusal, and keeps holding: three failover
# timeouts after the refusal there is still no activation.
decision_is_hold() {
  rj_ctl "$T/b.sock" status >/dev/null || return 1
  [[ $(rj_get "$RJ_REPLY" decision) == hold ]]
}
wait_until 10 "the backup's decision is hold" decision_is_hold
reason=$(rj_get "$RJ_REPLY" decision_reason)
log "decision: hold: $reason"
[[ $reason == *"refused it"* ]] || check_fail "the hold does not name the refusal: $reason"
sleep 3
decision_is_hold || check_fail "the backup stopped holding: $(rj_get "$RJ_REPLY" decision): $(rj_get "$RJ_REPLY" decision_reason)"
alive "$bpid" || check_fail "the backup exited while the refused primary was alive"
assert_no_failover "$T/events.json" "a refused, live primary"
alive "$p2" || check_fail "the refused primary died"
assert_grep "$T/primary2.log" "refused the session" "the primary says it was refused"

# 3. The operator stops the primary; the backup still holds its checkpoint,
# which verifies.
kill -TERM "$p2"
wait_exit "$p2" 30
kill -TERM "$bpid"
wait_exit "$bpid" 30
assert_no_failover "$T/events.json" "after the stop"
assert_no_crash "$T/backup.log" "$T/primary1.log" "$T/primary2.log"
verify_image "$T/img"
finish
