#!/usr/bin/env bash
# e2e: the backup crashes (SIGKILL) at every step of a commit
# (`restore --kill-at-commit STEP:EPOCH`; docs/IMAGE-FORMAT.md).
#
# For each step: the backup dies inside the commit of epoch 12. Then
#   - `romulus verify` (read-only) finds exactly one checkpoint: epoch 11
#     before the commit point (the journal's marker), epoch 12 from it on;
#   - verify changed nothing on disk;
#   - a backup restarted on the same image recovers that same checkpoint,
#     the primary (alive all along, UNPROTECTED meanwhile) reconnects and
#     resynchronises, commits continue, and the primary never sees a digest
#     mismatch; at the end `romulus verify` passes again.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

make_key "$T/key"
GUEST="sim:size=16M,workload=hotset"
KILL_EPOCH=12
declare -A WANT=([journal-pages]=11 [journal-body]=11 [state-tmp]=11 [journal-marker]=12
  [apply-half]=12 [applied]=12 [state-rename]=12 [journal-reset]=12)
SUMMARY=()

for step in journal-pages journal-body state-tmp journal-marker apply-half applied state-rename journal-reset; do
  d="$T/$step"
  mkdir -p "$d"
  port=$(free_port)
  start_backup bpid "$T/$step-backup1.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
    --image "$d/img" --events-json "$d/events.json" --kill-at-commit "$step:$KILL_EPOCH"
  bg ppid "$T/$step-primary.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$port" \
    --psk-file "$T/key" --interval 20ms --stats-json "$d/stats.json"
  wait_exit "$bpid" 60
  [[ $EXIT_CODE -eq 137 ]] || check_fail "$step: the backup exited $EXIT_CODE, expected 137 (SIGKILL at the step)"
  assert_grep "$T/$step-backup1.log" "drill: this backup dies at step $step of the commit of epoch $KILL_EPOCH" \
    "$step: the drill was armed"

  # verify: exactly one checkpoint, the expected one, and nothing written.
  before=$(cd "$d" && find . -type f -printf '%p %s\n' | sort; cd "$d" && cat img* 2>/dev/null | md5sum)
  out=$("$ROMULUS" verify --image "$d/img" 2>&1)
  rc=$?
  after=$(cd "$d" && find . -type f -printf '%p %s\n' | sort; cd "$d" && cat img* 2>/dev/null | md5sum)
  [[ $rc -eq 0 ]] || check_fail "$step: verify after the crash exited $rc: $out"
  [[ $before == "$after" ]] || check_fail "$step: verify changed the files on disk"
  got=$(echo "$out" | grep -Eo "epoch [0-9]+ is a consistent checkpoint" | head -n1 | grep -Eo "^epoch [0-9]+" | grep -Eo "[0-9]+")
  [[ ${got:-x} == "${WANT[$step]}" ]] ||
    check_fail "$step: after a crash at $step the image holds epoch ${got:-none}, expected ${WANT[$step]}: $out"

  # Restart on the same image: the same checkpoint, then the primary resyncs.
  start_backup bpid "$T/$step-backup2.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
    --image "$d/img" --events-json "$d/events2.json"
  assert_grep "$T/$step-backup2.log" "image holds committed epoch ${WANT[$step]} " "$step: the restarted backup recovers epoch ${WANT[$step]}"
  wait_until 60 "$step: commits resume after the restart" commit_at_least "$d/events2.json" $((KILL_EPOCH + 10))
  alive "$ppid" || check_fail "$step: the primary died"
  grep -q "digest .* differs" "$T/$step-primary.log" && check_fail "$step: the primary saw a digest mismatch"
  kill -TERM "$ppid"
  wait_exit "$ppid" 30
  wait_exit "$bpid" 30
  [[ $EXIT_CODE -eq 0 ]] || check_fail "$step: the restarted backup exited $EXIT_CODE"
  has_event "$d/events2.json" failover && check_fail "$step: the restarted backup failed over"
  assert_no_crash "$T/$step-backup2.log" "$T/$step-primary.log"
  verify_image "$d/img"
  SUMMARY+=("$step:${got:-?}")
done
log "crash at step -> checkpoint on disk: ${SUMMARY[*]}"
finish
