#!/usr/bin/env bash
# e2e: the fence hook decides whether the backup may activate.
# Proves:
#   - a fence command that exits non-zero stops the activation: the backup
#     logs why, records {"event":"failover",...,"activated":false}, HOLDS
#     (keeps serving, `ctl status` says decision "hold" and why), never
#     resumes the guest, and leaves its image at the last committed epoch;
#   - a fence command that hangs counts as failed after --fence-timeout;
#   - a fence command that exits 0 runs BEFORE activation with
#     ROMULUS_REASON and ROMULUS_EPOCH set to the failover's reason and epoch,
#     and the backup then activates from exactly that epoch.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

make_key "$T/key"
GUEST="sim:size=32M,workload=sparse"

run_pair() {  # run_pair NAME FENCE_CMD [WAIT]: replicate until epoch 10 is committed, then SIGKILL the primary
  local name=$1 fence=$2 wait=${3:-exit} port
  port=$(free_port)
  start_backup bpid "$T/$name-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
    --image "$T/$name.img" --events-json "$T/$name-events.json" --fence-cmd "$fence" \
    --control-socket "$T/$name.sock" --fence-timeout 1s
  bg ppid "$T/$name-primary.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$port" \
    --psk-file "$T/key" --interval 20ms --stats-json "$T/$name-stats.json"
  wait_until 30 "$name: backup commits epoch 10" commit_at_least "$T/$name-events.json" 10
  kill9 "$ppid"
  [[ $wait == exit ]] && wait_exit "$bpid" 20
  return 0
}

# held NAME: the backup stays up, holding, and says the fence did not confirm.
held() {
  local name=$1 st
  wait_until 30 "$name: a failover event (activated:false)" has_event "$T/$name-events.json" failover
  st=$("$ROMULUS" ctl --json --socket "$T/$name.sock" status)
  log "$name: status: $st"
  [[ $st == *'"decision":"hold"'* && $st == *fence* ]] || check_fail "$name: status does not say hold because of the fence: $st"
  alive "$bpid" || check_fail "$name: the backup exited instead of holding"
  kill -TERM "$bpid"
  wait_exit "$bpid" 20
  [[ $EXIT_CODE -eq 0 ]] || check_fail "$name: the held backup exited $EXIT_CODE on SIGTERM"
}

# 1. A refusing fence: no activation.
run_pair refuse "exit 3" hold
held refuse
assert_grep "$T/refuse-backup.log" "fence command failed" "refusing fence: the backup says the fence failed"
assert_grep "$T/refuse-backup.log" "NOT activating" "refusing fence: the backup says it does not activate"
jcheck field "$T/refuse-events.json" failover activated | grep -qx false ||
  check_fail "refusing fence: the failover event does not say activated:false"
grep -q "guest resumed from epoch" "$T/refuse-backup.log" &&
  check_fail "refusing fence: the guest was resumed anyway"
verify_image "$T/refuse.img"

# 1b. A fence that hangs: killed after --fence-timeout, counts as refused.
# A duration no other process on the host has (GNU sleep takes fractions), so the check
# below sees only this fence's process (a bare "sleep 600" elsewhere once failed it).
hang_cmd="sleep 600.$$"
run_pair hang "$hang_cmd" hold
held hang
assert_grep "$T/hang-backup.log" "fence command failed .*did not finish within" "hanging fence: the backup says it timed out"
grep -q "guest resumed from epoch" "$T/hang-backup.log" && check_fail "hanging fence: the guest was resumed anyway"
pgrep -f "^$hang_cmd\$" >/dev/null && check_fail "hanging fence: its process was left running"
verify_image "$T/hang.img"

# 2. An agreeing fence: it sees the reason and epoch, then the guest resumes.
run_pair agree "echo \"\$ROMULUS_EPOCH|\$ROMULUS_REASON\" > $T/fence.out"
[[ $EXIT_CODE -eq 0 ]] || check_fail "agreeing fence: the backup exited $EXIT_CODE, expected 0"
[[ -s $T/fence.out ]] || fail "agreeing fence: the fence command did not run"
fenced_epoch=$(cut -d'|' -f1 "$T/fence.out")
fenced_reason=$(cut -d'|' -f2- "$T/fence.out")
failover_epoch=$(jcheck field "$T/agree-events.json" failover last_committed_epoch)
log "fence saw epoch $fenced_epoch, reason '$fenced_reason'; failover from epoch $failover_epoch"
[[ -n $fenced_reason ]] || check_fail "agreeing fence: ROMULUS_REASON was empty"
[[ $fenced_epoch == "$failover_epoch" ]] ||
  check_fail "agreeing fence: ROMULUS_EPOCH=$fenced_epoch but the backup failed over from $failover_epoch"
jcheck field "$T/agree-events.json" failover activated | grep -qx true ||
  check_fail "agreeing fence: the failover event does not say activated:true"
assert_grep "$T/agree-backup.log" "guest resumed from epoch $failover_epoch" "agreeing fence: the guest resumed"
verify_image "$T/agree.img"
assert_no_crash "$T"/*.log
finish
