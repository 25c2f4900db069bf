#!/usr/bin/env bash
# e2e: two backups on one --image (issue 10, observation 6).
# Proves:
#   - a second `romulus restore --image SAME` (other port, with or without
#     --start-over) exits non-zero with "image X is in use by another romulus
#     restore (pid N)", before listening and without touching the file (same
#     inode, same size, never truncated);
#   - the first backup is still alive and keeps committing (it did not die of
#     SIGBUS under a truncated mapping);
#   - `romulus verify` on a path that does not exist creates nothing, and on
#     the final image changes no byte and passes.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

make_key "$T/key"
port=$(free_port)
port2=$(free_port)
GUEST="sim:size=64M,workload=hotset"

start_backup b1 "$T/backup1.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$T/img" --events-json "$T/events1.json"
bg ppid "$T/primary.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$port" \
  --psk-file "$T/key" --interval 20ms --epochs 400
wait_until 30 "first backup commits epoch 20" commit_at_least "$T/events1.json" 20

inode_before=$(stat -c %i "$T/img")
size_before=$(stat -c %s "$T/img")
for extra in "" "--start-over"; do
  # shellcheck disable=SC2086
  out=$(timeout 20 "$ROMULUS" restore --listen "127.0.0.1:$port2" --psk-file "$T/key" \
    --image "$T/img" --no-fence $extra 2>&1)
  rc=$?
  log "second backup ${extra:-(no flags)}: exit $rc: $(tail -n1 <<<"$out")"
  [[ $rc -ne 0 && $rc -ne 124 ]] || check_fail "second backup ${extra}: exit $rc, want a refusal (non-zero, not a timeout)"
  assert_exit_not_signal "$rc" "second backup $extra"
  grep -q "image $T/img is in use by another romulus restore (pid $b1)" <<<"$out" ||
    check_fail "second backup $extra: no 'in use by another romulus restore (pid $b1)' in: $out"
  if grep -q "backup listening on" <<<"$out"; then
    check_fail "second backup $extra listened before refusing the image"
  fi
done
[[ $(stat -c %i "$T/img") == "$inode_before" && $(stat -c %s "$T/img") == "$size_before" ]] ||
  check_fail "the refused backups changed the image (inode/size $inode_before/$size_before -> $(stat -c %i/%s "$T/img"))"

alive "$b1" || check_fail "the first backup died after the second one tried its image"
c=$(last_commit "$T/events1.json")
wait_until 30 "first backup keeps committing after epoch $c" commit_at_least "$T/events1.json" $((c + 20))
log "first backup still committing: epoch $(last_commit "$T/events1.json")"

# verify creates nothing where there is nothing.
out=$("$ROMULUS" verify --image "$T/none.img" 2>&1)
rc=$?
[[ $rc -ne 0 ]] || check_fail "verify of a missing image exited 0: $out"
if compgen -G "$T/none.img*" >/dev/null; then
  check_fail "verify of a missing image created $(ls "$T"/none.img*)"
fi

wait_exit "$ppid" 90
[[ $EXIT_CODE -eq 0 ]] || check_fail "primary exited $EXIT_CODE"
wait_exit "$b1" 15
[[ $EXIT_CODE -eq 0 ]] || check_fail "first backup exited $EXIT_CODE"
assert_exit_not_signal "$EXIT_CODE" "first backup"
assert_no_failover "$T/events1.json" "two backups on one image"
assert_no_crash "$T/backup1.log" "$T/primary.log"

sums=$(md5sum "$T"/img*)
verify_image "$T/img"
[[ "$(md5sum "$T"/img*)" == "$sums" ]] || check_fail "romulus verify changed the image's files"
finish
