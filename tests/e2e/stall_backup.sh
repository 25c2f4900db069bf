#!/usr/bin/env bash
# e2e: a stalled backup never activates while the primary lives
# (docs/FAILURE-MODEL.md §3; issue 10, observation 1).
#
#   stop     backup SIGSTOPped past the primary's ack timeout (the primary
#            gives up on it and reconnects), then SIGCONT: the backup must
#            not take the broken connection for a dead primary. It must go
#            back to committing epochs from the primary, never fail over.
#   pulses   the backup is starved (STOP 1.8 s / CONT 0.3 s, five times)
#            under default timeouts on both sides: the same.
# Each case then stops the primary cleanly (SIGTERM -> BYE), so the backup
# exits without activating, and `romulus verify` proves its image is exactly
# one checkpoint.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

make_key "$T/key"
GUEST="sim:size=32M,workload=hotset"

# no_failover NAME EVENTS BACKUP_PID: the first law, checked now.
no_failover() {
  if has_event "$2" failover; then
    check_fail "$1: the backup FAILED OVER while the primary was alive: $(jcheck field "$2" failover reason)"
  fi
  alive "$3" || check_fail "$1: the backup died"
}

run_case() {  # run_case NAME BACKUP_ARGS PRIMARY_ARGS STALL_FN
  local name=$1 bargs=$2 pargs=$3 stall=$4 port bpid ppid before after
  port=$(free_port)
  # shellcheck disable=SC2086
  start_backup bpid "$T/$name-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
    --image "$T/$name.img" --events-json "$T/$name-events.json" --no-fence $bargs
  # shellcheck disable=SC2086
  bg ppid "$T/$name-primary.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$port" \
    --psk-file "$T/key" --interval 20ms --stats-json "$T/$name-stats.json" $pargs
  wait_until 30 "$name: 20 commits" commit_at_least "$T/$name-events.json" 20
  before=$(last_commit "$T/$name-events.json")
  "$stall" "$name" "$bpid"
  no_failover "$name" "$T/$name-events.json" "$bpid"
  # The backup goes back to protecting the primary: new commits arrive.
  wait_until 60 "$name: commits resume after the stall" commit_at_least "$T/$name-events.json" $((before + 10))
  after=$(last_commit "$T/$name-events.json")
  log "$name: committed epoch $before before the stall, $after after it"
  no_failover "$name" "$T/$name-events.json" "$bpid"
  alive "$ppid" || check_fail "$name: the primary died"
  kill -TERM "$ppid"
  wait_exit "$ppid" 30
  [[ $EXIT_CODE -eq 0 ]] || check_fail "$name: primary exited $EXIT_CODE after SIGTERM"
  wait_exit "$bpid" 30
  [[ $EXIT_CODE -eq 0 ]] || check_fail "$name: backup exited $EXIT_CODE after the primary's clean stop"
  has_event "$T/$name-events.json" failover && check_fail "$name: a failover event after the clean stop"
  grep -q "guest resumed from epoch" "$T/$name-backup.log" && check_fail "$name: the backup resumed a guest"
  assert_no_crash "$T/$name-backup.log" "$T/$name-primary.log"
  verify_image "$T/$name.img"
}

# The primary (ack timeout 300 ms) gives up on the stopped backup; the backup
# (failover timeout 10 s) wakes up 1.5 s later to a connection that is gone.
stop_past_ack_timeout() {
  local name=$1 pid=$2
  kill -STOP "$pid"
  log "$name: backup stopped"
  wait_until 30 "$name: the primary declares the backup lost" grep -q "backup lost" "$T/$name-primary.log"
  sleep 1.5  # the stall itself (not a wait for a result)
  kill -CONT "$pid"
  log "$name: backup continued"
}
run_case stop "--failover-timeout 10s" "--ack-timeout 300ms" stop_past_ack_timeout

# A host so loaded that the backup runs 0.3 s in every 2.1 s, five times,
# with both sides at their default 1 s timeouts.
starvation_pulses() {
  local name=$1 pid=$2 i
  for i in 1 2 3 4 5; do
    kill -STOP "$pid"
    sleep 1.8  # the stall itself
    kill -CONT "$pid"
    sleep 0.3  # the slice of CPU it gets
  done
  log "$name: 5 starvation pulses done"
}
run_case pulses "" "" starvation_pulses

finish
