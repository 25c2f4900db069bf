#!/usr/bin/env bash
# e2e (issue 13): the primary of a simulated guest with a disk (`disk=1M`,
# its writer appending numbered records, some FUA, some WRITE_ZEROES/TRIM,
# FLUSH markers) is SIGKILLed at every phase of epoch 15 (--kill-at
# PHASE:15). The backup must fail over to exactly the checkpoint
# kill_phases.sh establishes for memory (14 before EPOCH_END 15 was written,
# 15 after), and that checkpoint's disk must hold exactly the records its
# memory says were written: never a record from beyond the checkpoint, never
# a hole before it (`romulus verify`, which replays the writer). The
# failover digest equals the commit digest of that epoch.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

KILL_EPOCH=15
GUEST="sim:size=16M,workload=seed,disk=1M"
make_key "$T/key"
declare -A WANT=([s]=14 [s2]=14 [r]=14 [r2]=14 [m]=14 [c]=15 [c2]=15)
SUMMARY=()

for phase in s s2 r r2 m c c2; do
  d="$T/$phase"
  mkdir -p "$d"
  port=$(free_port)
  start_backup bpid "$T/$phase-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
    --image "$d/img" --events-json "$d/events.json" --failover-timeout 1s
  bg ppid "$T/$phase-primary.log" "$ROMULUS" replicate --guest "$GUEST" --sim-disk "$d/primary.disk" \
    --to "127.0.0.1:$port" --psk-file "$T/key" --interval 20ms --stats-json "$d/stats.json" \
    --kill-at "$phase:$KILL_EPOCH"
  wait_exit "$ppid" 40
  [[ $EXIT_CODE -eq 137 ]] || check_fail "$phase: primary exit status $EXIT_CODE, expected 137 (SIGKILL)"
  wait_exit "$bpid" 15
  [[ $EXIT_CODE -eq 0 ]] || check_fail "$phase: backup exit status $EXIT_CODE, expected 0 after a successful failover"
  assert_no_crash "$T/$phase-backup.log" "$T/$phase-primary.log"
  if ! has_event "$d/events.json" failover; then
    check_fail "$phase: no failover event"
    continue
  fi
  fo_epoch=$(jcheck field "$d/events.json" failover last_committed_epoch)
  fo_digest=$(jcheck field "$d/events.json" failover digest)
  commit_digest=$(jcheck commit-digest "$d/events.json" "$fo_epoch")
  [[ $fo_epoch -eq ${WANT[$phase]} ]] ||
    check_fail "$phase: backup failed over at epoch $fo_epoch, expected exactly ${WANT[$phase]}"
  [[ -n $commit_digest && $fo_digest == "$commit_digest" ]] ||
    check_fail "$phase: failover digest $fo_digest != commit digest '$commit_digest' of epoch $fo_epoch"
  # Every epoch the primary sent carried disk data, and the sender's stats say so.
  recs=$(python3 -c 'import json,sys
n=0
for line in open(sys.argv[1]):
    line=line.strip()
    if line:
        n+=json.loads(line).get("disk_records",0)
print(n)' "$d/stats.json")
  [[ $recs -gt 0 ]] || check_fail "$phase: the primary's stats show no disk records"
  if v=$("$ROMULUS" verify --image "$d/img" --json 2>&1); then
    read -r vepoch vrecs < <(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["epoch"], j.get("disk_records","none"))' "$v")
    [[ $vepoch -eq $fo_epoch ]] || check_fail "$phase: verify checked epoch $vepoch, failover said $fo_epoch"
    [[ $vrecs =~ ^[0-9]+$ && $vrecs -gt 0 ]] || check_fail "$phase: verify did not check the disk's records ($vrecs)"
    log "$phase: failover at epoch $fo_epoch; disk holds exactly $vrecs records (primary sent $recs records)"
    SUMMARY+=("$phase:$fo_epoch/$vrecs")
  else
    check_fail "$phase: romulus verify: $v"
  fi
done
log "phase:epoch/disk records: ${SUMMARY[*]}"
finish
