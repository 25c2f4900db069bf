#!/usr/bin/env bash
# e2e: replicate a 64 MiB simulated guest over TLS-PSK on loopback, for each
# workload (seed, sparse, hotset, sequential), >= 200 epochs at 10 ms.
# Proves, per workload:
#   - every epoch the primary saw acked has a commit event on the backup with
#     the SAME digest (join by epoch), and >= 200 were acked;
#   - the run ends with a clean stop (BYE): stop event, no failover, both exit 0;
#   - `romulus verify` shows the final image is exactly the guest's memory at
#     the last committed checkpoint.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

EPOCHS=${E2E_EPOCHS:-200}
make_key "$T/key"

for w in seed sparse hotset sequential; do
  d="$T/$w"
  mkdir -p "$d"
  port=$(free_port)
  start_backup bpid "$T/$w-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
    --image "$d/img" --events-json "$d/events.json"
  t0=$(date +%s%N)
  bg ppid "$T/$w-primary.log" "$ROMULUS" replicate --guest "sim:size=64M,workload=$w" \
    --to "127.0.0.1:$port" --psk-file "$T/key" --interval 10ms --epochs "$EPOCHS" \
    --stats-json "$d/stats.json" --ack-timeout 10s
  # (A generous ack timeout: this test is about digests, and a loaded CI host
  # can take over 1 s for one commit; a missed ack would resync, not fail.)
  wait_exit "$ppid" 90
  prc=$EXIT_CODE
  wait_exit "$bpid" 10
  brc=$EXIT_CODE
  ms=$((($(date +%s%N) - t0) / 1000000))
  log "$w: primary exit $prc, backup exit $brc, $EPOCHS epochs in ${ms} ms"
  [[ $prc -eq 0 ]] || check_fail "$w: primary exited $prc"
  [[ $brc -eq 0 ]] || check_fail "$w: backup exited $brc (expected 0 after a clean stop)"
  if ! out=$(jcheck join "$d/stats.json" "$d/events.json" --min-acked 200 --require-stop); then
    check_fail "$w: acked digests vs backup commits: $out"
  else
    log "$w: $out"
  fi
  assert_grep "$T/$w-backup.log" "stopped replication cleanly" "$w: backup log names the clean stop"
  assert_no_crash "$T/$w-backup.log" "$T/$w-primary.log"
  verify_image "$d/img"
  rm -f "$d/img" # 64 MiB each: keep /tmp small
done

finish
