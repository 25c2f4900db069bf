#!/usr/bin/env bash
# e2e: SIGKILL the primary at every phase of epoch 15 (--kill-at PHASE:15) and
# check the backup fails over to exactly the right checkpoint.
#
# Which epoch must the backup hold? The primary's per-epoch stats line is
# written at the end of the epoch, so for every phase of epoch 15 its stats
# end at epoch 14 (acked). What the backup holds depends on how much of
# epoch 15 reached it:
#   s, s2, r, r2  killed around the suspend/resume of epoch 15, before any of
#                 its pages were sent (only BeginEpoch)             -> 14
#   m             killed mid-stream: a partial epoch 15 must be discarded -> 14
#   c             killed after EPOCH_END 15 was written, before the ack came
#                 back: the whole epoch is in the backup's socket, so it
#                 verifies and commits 15 (the ack is simply never read).
#                 14 would be legal for Remus semantics only if the bytes were
#                 lost, and on loopback they are not: we assert 15.       -> 15
#   c2            killed after the ack of 15 arrived                    -> 15
# Both 14 and 15 are "legal" checkpoints in general (the output of epoch 15 is
# released only after ack 15, so a backup at 14 is consistent with the
# outside world in c, too); here each phase has one exact answer.
#
# Also: the failover digest equals that epoch's commit digest; `romulus
# verify` proves the image is exactly that checkpoint; failover time (kill ->
# failover event) is printed.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

KILL_EPOCH=15
make_key "$T/key"
declare -A WANT=([s]=14 [s2]=14 [r]=14 [r2]=14 [m]=14 [c]=15 [c2]=15)
SUMMARY=()

for phase in s s2 r r2 m c c2; do
  d="$T/$phase"
  mkdir -p "$d"
  port=$(free_port)
  start_backup bpid "$T/$phase-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
    --image "$d/img" --events-json "$d/events.json" --failover-timeout 1s
  bg ppid "$T/$phase-primary.log" "$ROMULUS" replicate --guest "sim:size=32M,workload=seed" \
    --to "127.0.0.1:$port" --psk-file "$T/key" --interval 20ms --stats-json "$d/stats.json" \
    --kill-at "$phase:$KILL_EPOCH"
  wait_exit "$ppid" 40
  prc=$EXIT_CODE
  [[ $prc -eq 137 ]] || check_fail "$phase: primary exit status $prc, expected 137 (SIGKILL)"
  assert_grep "$T/$phase-primary.log" "drill: killing the primary at .* of epoch $KILL_EPOCH" \
    "$phase: primary log announces the drill"
  wait_exit "$bpid" 15
  brc=$EXIT_CODE
  [[ $brc -eq 0 ]] || check_fail "$phase: backup exit status $brc, expected 0 after a successful failover"
  assert_no_crash "$T/$phase-backup.log" "$T/$phase-primary.log"

  if ! has_event "$d/events.json" failover; then
    check_fail "$phase: no failover event"
    continue
  fi
  acked=$(jcheck last-acked "$d/stats.json")
  fo_epoch=$(jcheck field "$d/events.json" failover last_committed_epoch)
  fo_digest=$(jcheck field "$d/events.json" failover digest)
  fo_activated=$(jcheck field "$d/events.json" failover activated)
  fo_reason=$(jcheck field "$d/events.json" failover reason)
  fo_ms=$(jcheck field "$d/events.json" failover time_ms)
  kill_ms=$(jcheck log-time-ms "$T/$phase-primary.log" "drill: killing the primary")
  commit_digest=$(jcheck commit-digest "$d/events.json" "$fo_epoch")
  failover_ms=$((fo_ms - kill_ms))
  log "$phase: primary saw acked up to $acked; backup failed over at epoch $fo_epoch" \
    "(want ${WANT[$phase]}), reason '$fo_reason', failover ${failover_ms} ms after the kill"
  SUMMARY+=("$phase: epoch $fo_epoch, ${failover_ms} ms")

  [[ $acked -eq $((KILL_EPOCH - 1)) ]] ||
    check_fail "$phase: primary's stats end at acked epoch $acked, expected $((KILL_EPOCH - 1))"
  [[ $fo_epoch -eq ${WANT[$phase]} ]] ||
    check_fail "$phase: backup failed over at epoch $fo_epoch, expected exactly ${WANT[$phase]}"
  [[ -n $commit_digest && $fo_digest == "$commit_digest" ]] ||
    check_fail "$phase: failover digest $fo_digest != commit digest '$commit_digest' of epoch $fo_epoch"
  [[ $fo_activated == true ]] || check_fail "$phase: failover event says activated=$fo_activated"
  # Every epoch both sides know about agrees on the digest.
  out=$(jcheck join "$d/stats.json" "$d/events.json") || check_fail "$phase: $out"
  assert_grep "$T/$phase-backup.log" "FAILOVER: .*activating the guest from epoch $fo_epoch" \
    "$phase: backup log says why and from which epoch it fails over"
  if v=$("$ROMULUS" verify --image "$d/img" --json 2>&1); then
    vepoch=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["epoch"])' "$v")
    [[ $vepoch -eq $fo_epoch ]] || check_fail "$phase: verify checked epoch $vepoch, failover said $fo_epoch"
    log "$phase: verify: $v"
  else
    check_fail "$phase: romulus verify: $v"
  fi
  rm -f "$d/img"
done

log "failover times (SIGKILL of the primary -> backup's failover event):"
for s in "${SUMMARY[@]}"; do log "  $s"; done
finish
