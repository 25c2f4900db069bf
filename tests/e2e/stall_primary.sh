#!/usr/bin/env bash
# e2e: the backup judges the primary's silence by ITS OWN --failover-timeout
# (issue 10, observation 2; docs/FAILURE-MODEL.md §1).
#
#   short  primary SIGSTOPped for 2.5 s; backup --failover-timeout 10s, primary
#          --ack-timeout 300ms: no failover (the primary's timeout is not the
#          backup's), the primary continues and the backup protects it again.
#   long   primary SIGSTOPped for good; backup --failover-timeout 2s and a fence
#          command that SIGKILLs the primary (STONITH): the backup fences, then
#          activates exactly its last committed epoch, and only one copy lives.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

make_key "$T/key"
GUEST="sim:size=32M,workload=hotset"

start_pair() {  # start_pair NAME BACKUP_ARGS...: sets bpid, ppid, port
  local name=$1
  shift
  port=$(free_port)
  start_backup bpid "$T/$name-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
    --image "$T/$name.img" --events-json "$T/$name-events.json" "$@"
  bg ppid "$T/$name-primary.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$port" \
    --psk-file "$T/key" --interval 20ms --ack-timeout 300ms --stats-json "$T/$name-stats.json"
  echo "$ppid" >"$T/$name.primary.pid"
  wait_until 30 "$name: 20 commits" commit_at_least "$T/$name-events.json" 20
}

# --- short: silence shorter than the backup's failover timeout
start_pair short --failover-timeout 10s --no-fence
# Where an operator looks first at a stalled process (ps -L, top -H): each
# thread says what it does.
for who in "primary:$ppid:wire ack-reader heartbeat sim-guest" "backup:$bpid:backup-accept heartbeat"; do
  IFS=: read -r side pid want <<<"$who"
  names=" $(cat /proc/"$pid"/task/*/comm 2>/dev/null | sort -u | tr '\n' ' ') "
  for n in $want; do
    [[ $names == *" $n "* ]] || check_fail "the $side has no thread named $n (threads:$names)"
  done
done
before=$(last_commit "$T/short-events.json")
kill -STOP "$ppid"
sleep 2.5  # the stall itself
kill -CONT "$ppid"
log "short: primary stopped for 2.5 s at epoch ~$before"
wait_until 60 "short: commits resume" commit_at_least "$T/short-events.json" $((before + 10))
has_event "$T/short-events.json" failover &&
  check_fail "short: the backup failed over after 2.5 s of silence with --failover-timeout 10s: $(jcheck field "$T/short-events.json" failover reason)"
alive "$bpid" || check_fail "short: the backup exited"
kill -TERM "$ppid"
wait_exit "$ppid" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "short: primary exited $EXIT_CODE"
wait_exit "$bpid" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "short: backup exited $EXIT_CODE"
assert_no_crash "$T/short-backup.log" "$T/short-primary.log"
verify_image "$T/short.img"

# --- long: the primary is stopped for good; the fence kills it, then activation
fence="kill -9 \$(cat $T/long.primary.pid)"
start_pair long --failover-timeout 2s --fence-cmd "$fence"
kill -STOP "$ppid"
t0=$(date +%s.%N)
log "long: primary stopped for good"
wait_exit "$bpid" 60
[[ $EXIT_CODE -eq 0 ]] || check_fail "long: backup exited $EXIT_CODE, expected 0 after activating"
alive "$ppid" && check_fail "long: the primary is still alive after the backup activated (fence did not run?)"
has_event "$T/long-events.json" failover || fail "long: no failover event"
fo_epoch=$(jcheck field "$T/long-events.json" failover last_committed_epoch)
fo_digest=$(jcheck field "$T/long-events.json" failover digest)
last=$(last_commit "$T/long-events.json")
[[ $fo_epoch -eq $last ]] || check_fail "long: failover from epoch $fo_epoch, but the last commit was $last"
[[ $fo_digest == "$(jcheck commit-digest "$T/long-events.json" "$fo_epoch")" ]] ||
  check_fail "long: failover digest $fo_digest is not epoch $fo_epoch's commit digest"
assert_grep "$T/long-backup.log" "primary silent for [0-9]+ ms" "long: the backup names the silence"
assert_grep "$T/long-backup.log" "fence command confirmed" "long: the fence ran before activation"
log "long: failover from epoch $fo_epoch, $(python3 -c "import time; print('%.1f' % (time.time() - $t0))") s after the stop"
assert_no_crash "$T/long-backup.log"
verify_image "$T/long.img"
finish
