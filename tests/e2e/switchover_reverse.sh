#!/usr/bin/env bash
# e2e: `romulus switchover --reverse` and `romulus restore --reverse-to`.
#
# 1. Planned: primary P1 -> backup B1; B2 listens (standing in for the old
#    host). `switchover --socket P1 --backup-socket B1 --reverse B2` hands
#    over with no lost epoch, B1 becomes the guest's primary (its socket now
#    answers role primary, PROTECTED) and replicates to B2; both ends agree
#    per region (`drill verify`); B1 is SIGKILLed, B2 fails over and its
#    image verifies.
# 2. Reverse target not there yet: the switchover fails with a clear message
#    after its --timeout, the new primary keeps retrying, and once a restore
#    listens there it becomes PROTECTED; then a switchover of that pair with
#    its own --reverse (the way back), and a clean SIGTERM stop.
# 3. Unplanned: a backup started with --reverse-to re-protects the guest
#    after its primary is SIGKILLed.
# 4. As 3. with a simulated disk: replicated back with the memory, verified.
# 5. Such a reversed primary, with a disk, stops cleanly on SIGTERM.
# 6. The old primary's disk as the new backup's copy: only what differs is copied.
# Every wait is a poll with a deadline; no timing thresholds.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

j() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d'"$2"')' "$1"; }
# ctl_field SOCK FIELD: FIELD of `ctl status` on SOCK ("" if it does not answer).
ctl_field() {
  local out
  out=$("$ROMULUS" ctl --json --socket "$1" status 2>/dev/null) || return 0
  j "$out" ".get('$2', '')"
}
is_primary_protected() {
  [[ $(ctl_field "$1" role) == primary && $(ctl_field "$1" protection) == PROTECTED ]]
}

make_key "$T/key"
p1=$(free_port)
p2=$(free_port)

# ---- 1. Planned switchover with --reverse.
start_backup b1 "$T/b1.log" --listen "127.0.0.1:$p1" --psk-file "$T/key" --image "$T/b1.img" \
  --events-json "$T/b1-events.json" --control-socket "$T/b1.sock"
start_backup b2 "$T/b2.log" --listen "127.0.0.1:$p2" --psk-file "$T/key" --image "$T/b2.img" \
  --events-json "$T/b2-events.json" --control-socket "$T/b2.sock"
bg p1pid "$T/p1.log" "$ROMULUS" replicate --guest "sim:size=64M,workload=hotset" --to "127.0.0.1:$p1" \
  --psk-file "$T/key" --interval 50ms --stats-json "$T/p1-stats.json" --control-socket "$T/p1.sock"
wait_until 120 "P1 PROTECTED" is_primary_protected "$T/p1.sock"

# The backup command: bad targets are usage errors (exit 2), `none` is accepted.
"$ROMULUS" ctl --json --socket "$T/b1.sock" set reverse-to nohostport >/dev/null 2>&1
[[ $? -eq 2 ]] || check_fail "ctl set reverse-to nohostport should exit 2"
"$ROMULUS" ctl --json --socket "$T/b1.sock" set reverse-to ":$p2" >/dev/null 2>&1
[[ $? -eq 2 ]] || check_fail "ctl set reverse-to :PORT (no host) should exit 2"
"$ROMULUS" ctl --json --socket "$T/b1.sock" set reverse-to none >/dev/null || check_fail "ctl set reverse-to none"
[[ -z $(ctl_field "$T/b1.sock" reverse_to) ]] || check_fail "reverse_to set after 'none'"

sw=$("$ROMULUS" switchover --socket "$T/p1.sock" --backup-socket "$T/b1.sock" --reverse "127.0.0.1:$p2" \
  --timeout 120s --json 2>"$T/sw1.err")
rc=$?
log "switchover --reverse: $sw $(cat "$T/sw1.err")"
[[ $rc -eq 0 ]] || check_fail "switchover --reverse exited $rc: $sw $(cat "$T/sw1.err")"
final=$(j "$sw" '["final_epoch"]')
[[ $(j "$sw" '["backup_epoch"]') -eq $final ]] || check_fail "switchover: backup_epoch != final_epoch: $sw"
[[ $(j "$sw" '["reverse_to"]') == "127.0.0.1:$p2" ]] || check_fail "switchover: reverse_to: $sw"
[[ $(j "$sw" '["reverse_protection"]') == PROTECTED ]] || check_fail "switchover: reverse_protection: $sw"
[[ $(j "$sw" '["reverse_epoch"]') -ge 1 ]] || check_fail "switchover: reverse_epoch: $sw"
# The new primary got P1's interval (50 ms), not replicate's default 100 ms.
[[ $(j "$sw" '["reverse_interval_us"]') -eq 50000 ]] || check_fail "switchover: reverse_interval_us: $sw"

wait_exit "$p1pid" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "P1 exit $EXIT_CODE after the switchover"
[[ $(jcheck last-acked "$T/p1-stats.json") -eq $final ]] || check_fail "P1's last acked is not the final epoch $final"
wait_until 30 "B1 failover event" has_event "$T/b1-events.json" failover
[[ $(jcheck field "$T/b1-events.json" failover last_committed_epoch) -eq $final ]] ||
  check_fail "B1 activated at $(jcheck field "$T/b1-events.json" failover last_committed_epoch), final was $final"
[[ $(jcheck field "$T/b1-events.json" failover activated) == true ]] || check_fail "B1 not activated"
[[ $(jcheck field "$T/b1-events.json" failover reason) == *"planned switchover"* ]] ||
  check_fail "B1 failover reason: $(jcheck field "$T/b1-events.json" failover reason)"

# B1's socket now serves the primary command set for the reverse replication.
st=$("$ROMULUS" ctl --json --socket "$T/b1.sock" status)
log "B1 status: $st"
[[ $(j "$st" '["role"]') == primary ]] || check_fail "B1 role after switchover: $st"
[[ $(j "$st" '["protection"]') == PROTECTED ]] || check_fail "B1 protection: $st"
[[ $(j "$st" '["replicating_to"]') == "127.0.0.1:$p2" ]] || check_fail "B1 replicating_to: $st"
[[ $(j "$st" '["activated_from_epoch"]') -eq $final ]] || check_fail "B1 activated_from_epoch: $st"
[[ $(j "$st" '["interval_us"]') -eq 50000 ]] || check_fail "B1 interval_us (P1's 50 ms carried over): $st"
"$ROMULUS" ctl --socket "$T/b1.sock" set reverse-to "127.0.0.1:$p2" >/dev/null 2>"$T/rev-on-primary.err"
rc=$?
# A command this role does not have: refused by the one rule (exit 1), not a malformed request.
[[ $rc -eq 1 ]] || check_fail "a backup command on the new primary's socket should be refused (exit 1), got $rc"
assert_grep "$T/rev-on-primary.err" "'set reverse-to' is not a command of this primary" "the refusal names the role"

# B2 commits B1's checkpoints, and keeps doing so.
wait_until 60 "B2 commits from B1" commit_at_least "$T/b2-events.json" 1
k=$(last_commit "$T/b2-events.json")
wait_until 60 "B2 keeps committing" commit_at_least "$T/b2-events.json" $((k + 3))
assert_grep "$T/b1.log" "replicating the activated guest to 127.0.0.1:$p2" "B1 logs the reverse replication"
# Both ends of the reverse pair agree, whole and per region, at one epoch.
v=$("$ROMULUS" drill verify --socket "$T/b1.sock" --backup-socket "$T/b2.sock" --regions 16 --json)
rc=$?
log "drill verify B1 -> B2: $v"
[[ $rc -eq 0 && $(j "$v" '["match"]') == True ]] || check_fail "drill verify B1 -> B2: rc $rc, $v"

# The new primary's host dies: B2 fails over from its last commit.
kill9 "$b1"
wait_until 60 "B2 failover event" has_event "$T/b2-events.json" failover
wait_exit "$b2" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "B2 exit $EXIT_CODE after failover"
[[ $(jcheck field "$T/b2-events.json" failover activated) == true ]] || check_fail "B2 not activated"
[[ $(jcheck field "$T/b2-events.json" failover last_committed_epoch) -eq $(last_commit "$T/b2-events.json") ]] ||
  check_fail "B2 did not fail over from its last commit"
verify_image "$T/b2.img"
# B2 holds a continuation of the guest B1 activated at the final epoch (B1's
# image stayed at that epoch): the same guest, further on.
steps() { "$ROMULUS" verify --image "$1" 2>/dev/null | sed -n 's/.*the guest after \([0-9]*\) steps.*/\1/p'; }
s1=$(steps "$T/b1.img")
s2=$(steps "$T/b2.img")
log "steps: B1's image (epoch $final) $s1, B2's image $s2"
[[ -n $s1 && -n $s2 && $s2 -gt $s1 ]] || check_fail "B2's guest ($s2 steps) does not continue B1's ($s1 steps)"

# ---- 2. Nothing listens at the reverse target yet.
p3=$(free_port)
p4=$(free_port)
start_backup b3 "$T/b3.log" --listen "127.0.0.1:$p3" --psk-file "$T/key" --image "$T/b3.img" \
  --events-json "$T/b3-events.json" --control-socket "$T/b3.sock"
bg p3pid "$T/p3.log" "$ROMULUS" replicate --guest "sim:size=32M,workload=hotset" --to "127.0.0.1:$p3" \
  --psk-file "$T/key" --interval 50ms --control-socket "$T/p3.sock"
wait_until 120 "P3 PROTECTED" is_primary_protected "$T/p3.sock"
# (A short --reverse-timeout: nothing listens there, so however long we waited
# the answer would be the same; the handover keeps a generous --timeout.)
"$ROMULUS" switchover --socket "$T/p3.sock" --backup-socket "$T/b3.sock" --reverse "127.0.0.1:$p4" \
  --timeout 120s --reverse-timeout 3s >"$T/sw2.out" 2>"$T/sw2.err"
rc=$?
log "switchover to a missing reverse target: rc $rc: $(cat "$T/sw2.out" "$T/sw2.err")"
[[ $rc -eq 1 ]] || check_fail "switchover --reverse to a port nobody listens on exited $rc, expected 1"
assert_grep "$T/sw2.err" "NOT protected.*did not become PROTECTED within 3 s" "switchover says the reverse is unprotected"
assert_grep "$T/sw2.err" "romulus restore --listen 127.0.0.1:$p4" "switchover names the restore to start"
wait_exit "$p3pid" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "P3 exit $EXIT_CODE after the switchover"
[[ $(ctl_field "$T/b3.sock" role) == primary ]] || check_fail "B3 is not a primary after the switchover"
# The operator starts the restore on the old host: the new primary, still
# retrying, connects and the guest is protected again.
start_backup b4 "$T/b4.log" --listen "127.0.0.1:$p4" --psk-file "$T/key" --image "$T/b4.img" \
  --events-json "$T/b4-events.json" --control-socket "$T/b4.sock"
wait_until 120 "B3 PROTECTED once B4 listens" is_primary_protected "$T/b3.sock"
wait_until 60 "B4 commits" commit_at_least "$T/b4-events.json" 1
# And back again: a switchover of the reverse pair (text output), with its
# own reverse to B7 (the host the guest just left).
p7=$(free_port)
start_backup b7 "$T/b7.log" --listen "127.0.0.1:$p7" --psk-file "$T/key" --image "$T/b7.img" \
  --events-json "$T/b7-events.json"
"$ROMULUS" switchover --socket "$T/b3.sock" --backup-socket "$T/b4.sock" --reverse "127.0.0.1:$p7" \
  --timeout 120s >"$T/sw3.out" 2>"$T/sw3.err"
rc=$?
log "switchover back: rc $rc: $(cat "$T/sw3.out" "$T/sw3.err")"
[[ $rc -eq 0 ]] || check_fail "switchover of the reverse pair exited $rc"
assert_grep "$T/sw3.out" "^  replicating back to 127\.0\.0\.1:$p7: PROTECTED at epoch [0-9]+$" "switchover reports the reverse"
wait_exit "$b3" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "B3 exit $EXIT_CODE after handing over"
is_primary_protected "$T/b4.sock" || check_fail "B4 is not a PROTECTED primary after the switchover back"
wait_until 60 "B7 commits" commit_at_least "$T/b7-events.json" 1
# SIGTERM: a clean stop of the reverse replication (BYE): B7 stops, no failover.
kill -TERM "$b4"
wait_exit "$b4" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "B4 exit $EXIT_CODE after SIGTERM"
wait_exit "$b7" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "B7 exit $EXIT_CODE after B4's clean stop"
has_event "$T/b7-events.json" stop || check_fail "B7 did not log a clean stop"
has_event "$T/b7-events.json" failover && check_fail "B7 failed over on a clean stop"
verify_image "$T/b7.img"

# ---- 3. Unplanned failover with --reverse-to: the guest is re-protected.
p5=$(free_port)
p6=$(free_port)
start_backup b6 "$T/b6.log" --listen "127.0.0.1:$p6" --psk-file "$T/key" --image "$T/b6.img" \
  --events-json "$T/b6-events.json"
start_backup b5 "$T/b5.log" --listen "127.0.0.1:$p5" --psk-file "$T/key" --image "$T/b5.img" \
  --events-json "$T/b5-events.json" --control-socket "$T/b5.sock" --reverse-to "127.0.0.1:$p6"
[[ $(ctl_field "$T/b5.sock" reverse_to) == "127.0.0.1:$p6" ]] || check_fail "B5 status does not show reverse_to"
bg p5pid "$T/p5.log" "$ROMULUS" replicate --guest "sim:size=32M,workload=hotset" --to "127.0.0.1:$p5" \
  --psk-file "$T/key" --interval 50ms --control-socket none
wait_until 120 "B5 commits" commit_at_least "$T/b5-events.json" 3
kill9 "$p5pid"
wait_until 60 "B5 failover event" has_event "$T/b5-events.json" failover
[[ $(jcheck field "$T/b5-events.json" failover activated) == true ]] || check_fail "B5 not activated"
wait_until 120 "B5 replicates to B6, PROTECTED" is_primary_protected "$T/b5.sock"
wait_until 60 "B6 commits" commit_at_least "$T/b6-events.json" 1
kill9 "$b5"
wait_until 60 "B6 failover event" has_event "$T/b6-events.json" failover
wait_exit "$b6" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "B6 exit $EXIT_CODE after failover"
verify_image "$T/b6.img"

# ---- 4. The same with a disk: the activated guest's disk is replicated back
#      with its memory (docs/DISK.md §8b), never memory alone: the new backup's
#      first epoch carries a copy of it (not resumable until whole), and the
#      image it fails over to verifies memory and disk as one checkpoint, the
#      disk's records included.
p9=$(free_port)
p10=$(free_port)
start_backup b10 "$T/b10.log" --listen "127.0.0.1:$p10" --psk-file "$T/key" --image "$T/b10.img" \
  --events-json "$T/b10-events.json"
start_backup b9 "$T/b9.log" --listen "127.0.0.1:$p9" --psk-file "$T/key" --image "$T/b9.img" \
  --events-json "$T/b9-events.json" --control-socket "$T/b9.sock" --reverse-to "127.0.0.1:$p10"
bg p9pid "$T/p9.log" "$ROMULUS" replicate --guest "sim:size=32M,workload=hotset,disk=16M" \
  --sim-disk "$T/p9.disk" --to "127.0.0.1:$p9" --psk-file "$T/key" --interval 50ms --control-socket "$T/p9.sock"
# PROTECTED: B9's checkpoints are resumable (the disk's first copy is done).
wait_until 120 "P9 PROTECTED" is_primary_protected "$T/p9.sock"
wait_until 120 "B9 commits" commit_at_least "$T/b9-events.json" 3
kill9 "$p9pid"
wait_until 60 "B9 failover event" has_event "$T/b9-events.json" failover
[[ $(jcheck field "$T/b9-events.json" failover activated) == true ]] || check_fail "B9 not activated"
wait_until 120 "B9 replicates to B10, PROTECTED" is_primary_protected "$T/b9.sock"
assert_grep "$T/b10-events.json" '"event":"commit".*"not_resumable":"disk xvda is still being copied' \
  "B10's first epoch did not carry the activated guest's disk (memory alone was replicated)"
wait_until 60 "B10 commits" commit_at_least "$T/b10-events.json" 4
kill9 "$b9"
wait_until 60 "B10 failover event" has_event "$T/b10-events.json" failover
wait_exit "$b10" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "B10 exit $EXIT_CODE after failover"
if v=$("$ROMULUS" verify --image "$T/b10.img" --json 2>&1); then
  read -r vepoch recs < <(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["epoch"], j.get("disk_records","none"))' "$v")
  [[ $recs =~ ^[0-9]+$ && $recs -gt 0 ]] || check_fail "B10: verify did not check the disk's records ($recs): $v"
  [[ $vepoch -eq $(jcheck field "$T/b10-events.json" failover last_committed_epoch) ]] ||
    check_fail "B10: verify checked epoch $vepoch, not the failover's: $v"
  log "B10 verify: $v"
else
  check_fail "B10: romulus verify failed: $v"
fi

# ---- 5. A reversed primary whose guest has a disk stops cleanly on SIGTERM
#      (its guest writes through the disk's clock and log until stopped: they
#      must outlive it).
p11=$(free_port)
p12=$(free_port)
start_backup b12 "$T/b12.log" --listen "127.0.0.1:$p12" --psk-file "$T/key" --image "$T/b12.img"
start_backup b11 "$T/b11.log" --listen "127.0.0.1:$p11" --psk-file "$T/key" --image "$T/b11.img" \
  --events-json "$T/b11-events.json" --control-socket "$T/b11.sock" --reverse-to "127.0.0.1:$p12"
bg p11pid "$T/p11.log" "$ROMULUS" replicate --guest "sim:size=16M,workload=hotset,disk=4M" \
  --sim-disk "$T/p11.disk" --to "127.0.0.1:$p11" --psk-file "$T/key" --interval 50ms --control-socket "$T/p11.sock"
wait_until 120 "P11 PROTECTED" is_primary_protected "$T/p11.sock"
kill9 "$p11pid"
wait_until 60 "B11 failover event" has_event "$T/b11-events.json" failover
wait_until 120 "B11 replicates to B12, PROTECTED" is_primary_protected "$T/b11.sock"
kill -TERM "$b11"
wait_exit "$b11" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "the reversed primary exited $EXIT_CODE on SIGTERM (want 0)"
kill -TERM "$b12" 2>/dev/null

# ---- 6. The old primary comes back as the backup with its old disk
#      (docs/DISK.md §7.4): the reversed primary's copy leaves out the chunks
#      that disk holds already (DISK_DIGESTS), and copies the rest, the old
#      primary's writes from beyond the checkpoint included: the image it
#      fails over to verifies (a record beyond its memory's last, left in a
#      chunk wrongly left out, fails verify).
p13=$(free_port)
p14=$(free_port)
start_backup b13 "$T/b13.log" --listen "127.0.0.1:$p13" --psk-file "$T/key" --image "$T/b13.img" \
  --events-json "$T/b13-events.json" --control-socket "$T/b13.sock" --reverse-to "127.0.0.1:$p14"
bg p13pid "$T/p13.log" "$ROMULUS" replicate --guest "sim:size=16M,workload=hotset,disk=24M" \
  --sim-disk "$T/p13.disk" --to "127.0.0.1:$p13" --psk-file "$T/key" --interval 50ms --control-socket "$T/p13.sock"
wait_until 120 "P13 PROTECTED" is_primary_protected "$T/p13.sock"
wait_until 120 "B13 commits" commit_at_least "$T/b13-events.json" 5
kill9 "$p13pid"
wait_until 60 "B13 failover event" has_event "$T/b13-events.json" failover
# The old primary's disk, as its host would keep it, becomes the new
# backup's starting copy (no checkpoint: PATH.state absent).
cp --sparse=always "$T/p13.disk" "$T/b14.img.disk0"
start_backup b14 "$T/b14.log" --listen "127.0.0.1:$p14" --psk-file "$T/key" --image "$T/b14.img" \
  --events-json "$T/b14-events.json"
wait_until 120 "B13 replicates to B14, PROTECTED" is_primary_protected "$T/b13.sock"
assert_grep "$T/b14.log" "described [0-9]+ chunk\(s\) of 1 MiB of its disks" "B14 did not describe its disk to B13"
assert_grep "$T/b13.log" "disk xvda: copy to the backup complete with epoch [0-9]+: .*left out: the backup held them" \
  "B13's copy left nothing out of what B14 held"
log "B13: $(grep -o 'disk xvda: copy to the backup complete.*' "$T/b13.log" | head -n1)"
wait_until 60 "B14 commits" commit_at_least "$T/b14-events.json" 4
kill9 "$b13"
wait_until 60 "B14 failover event" has_event "$T/b14-events.json" failover
wait_exit "$b14" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "B14 exit $EXIT_CODE after failover"
if v=$("$ROMULUS" verify --image "$T/b14.img" --json 2>&1); then
  recs=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("disk_records","none"))' "$v")
  [[ $recs =~ ^[0-9]+$ && $recs -gt 0 ]] || check_fail "B14: verify did not check the disk's records ($recs): $v"
  log "B14 verify: $v"
else
  check_fail "B14: romulus verify failed: $v"
fi

assert_no_crash "$T"/*.log
finish
