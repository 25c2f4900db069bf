#!/usr/bin/env bash
# e2e (issue 13): a simulated guest with a disk (`disk=1M`, its writer
# appending numbered records) is replicated; the backup dies (SIGKILL) at
# every step of the commit of epoch 12 (`restore --kill-at-commit`). For each
# step `romulus verify` (read-only) finds exactly one checkpoint, epoch 11
# before the journal's marker and 12 from it on, whose disk holds exactly the
# records its memory says were written (memory and disk are the same
# checkpoint), and verify writes nothing. Then a byte flipped in the disk
# file makes verify fail: the check can fail.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

make_key "$T/key"
GUEST="sim:size=16M,workload=hotset,disk=1M"
KILL_EPOCH=12
declare -A WANT=([journal-pages]=11 [journal-body]=11 [state-tmp]=11 [journal-marker]=12
  [apply-half]=12 [applied]=12 [state-rename]=12 [journal-reset]=12)
SUMMARY=()

for step in journal-pages journal-body state-tmp journal-marker apply-half applied state-rename journal-reset; do
  d="$T/$step"
  mkdir -p "$d"
  port=$(free_port)
  start_backup bpid "$T/$step-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
    --image "$d/img" --kill-at-commit "$step:$KILL_EPOCH"
  bg ppid "$T/$step-primary.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$port" \
    --psk-file "$T/key" --interval 20ms
  wait_exit "$bpid" 60
  [[ $EXIT_CODE -eq 137 ]] || check_fail "$step: the backup exited $EXIT_CODE, expected 137 (SIGKILL at the step)"
  kill -TERM "$ppid"
  wait_exit "$ppid" 30
  [[ -f "$d/img.disk0" ]] || check_fail "$step: no disk file img.disk0 next to the image"

  before=$(cd "$d" && find . -type f -printf '%p %s\n' | sort; cd "$d" && cat img* 2>/dev/null | md5sum)
  out=$("$ROMULUS" verify --image "$d/img" 2>&1)
  rc=$?
  after=$(cd "$d" && find . -type f -printf '%p %s\n' | sort; cd "$d" && cat img* 2>/dev/null | md5sum)
  [[ $rc -eq 0 ]] || check_fail "$step: verify after the crash exited $rc: $out"
  [[ $before == "$after" ]] || check_fail "$step: verify changed the files on disk"
  grep -q "its disk holding exactly its [0-9]* records" <<<"$out" ||
    check_fail "$step: verify did not check the disk: $out"
  got=$(echo "$out" | grep -Eo "epoch [0-9]+ is a consistent checkpoint" | head -n1 | grep -Eo "^epoch [0-9]+" | grep -Eo "[0-9]+")
  [[ ${got:-x} == "${WANT[$step]}" ]] ||
    check_fail "$step: after a crash at $step the image holds epoch ${got:-none}, expected ${WANT[$step]}: $out"
  SUMMARY+=("$step:${got:-?}")
done

# A flipped byte in the committed disk: verify must say so.
d="$T/journal-reset"
printf '\x5a' | dd of="$d/img.disk0" bs=1 seek=4100 conv=notrunc status=none
out=$("$ROMULUS" verify --image "$d/img" 2>&1) && check_fail "verify passed a damaged disk: $out"
grep -q "does not match its recorded digest" <<<"$out" || check_fail "verify did not name the disk digest: $out"

log "crash at step -> checkpoint (memory and disk) on disk: ${SUMMARY[*]}"
finish
