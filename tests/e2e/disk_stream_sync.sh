#!/usr/bin/env bash
# e2e (issue 13, docs/DISK.md §7.1): a simulated guest whose disk (256 MiB)
# is four times the disk log's budget (64 MiB) — more than the old in-pause
# copy could ever carry — is copied to a fresh backup by the streaming copy,
# beside the running guest (at most 64 MiB of data per epoch; its holes are
# one ZERO record each, free). The session's first epoch never carries any of
# the copy, so its disk is never whole.
#
# 1. The primary is SIGKILLed after epoch 1's EPOCH_END (`c:1`): the backup
#    commits memory of epoch 1 but holds no whole disk. The
#    first law: it must not activate (not on silence, not on `ctl failover`),
#    must say why, and its image must hold no checkpoint (`romulus verify`
#    refuses it).
# 2. A second run lets the copy finish: the primary logs the epoch that
#    completed it, the backup's commits stop saying "not_resumable" from that
#    epoch on, the primary is SIGKILLed some epochs later, and the backup
#    fails over to a checkpoint whose 256 MiB disk holds exactly the records
#    its memory says were written (`romulus verify` replays the writer).
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

j() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d'"$2"')' "$1"; }
GUEST="sim:size=16M,workload=seed,disk=256M"
make_key "$T/key"

# ---- 1. killed during the copy
d="$T/mid"
mkdir -p "$d"
port=$(free_port)
start_backup bpid "$T/mid-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$d/img" --events-json "$d/events.json" --failover-timeout 1s --control-socket "$d/b.sock"
bg ppid "$T/mid-primary.log" "$ROMULUS" replicate --guest "$GUEST" --sim-disk "$d/primary.disk" \
  --to "127.0.0.1:$port" --psk-file "$T/key" --interval 20ms --kill-at c:1 --control-socket none
wait_exit "$ppid" 120
[[ $EXIT_CODE -eq 137 ]] || check_fail "mid: primary exit status $EXIT_CODE, expected 137 (SIGKILL at c:1)"
holding() { grep -F '"event":"decision"' "$d/events.json" | grep -F '"decision":"hold"' | grep -qF 'still being copied'; }
wait_until 30 "the backup's decision to hold, naming the copy" holding
assert_grep "$d/events.json" '"event":"commit".*"epoch":1.*"not_resumable":"disk xvda is still being copied' \
  "mid: epoch 1 committed as not resumable"
fo=$("$ROMULUS" ctl --json --socket "$d/b.sock" failover 2>&1)
[[ $? -ne 0 ]] || check_fail "mid: ctl failover activated a checkpoint whose disk is partial: $fo"
log "mid: ctl failover refused: $fo"
st=$("$ROMULUS" ctl --json --socket "$d/b.sock" status 2>&1)
[[ $(j "$st" '["protection"]') == UNPROTECTED ]] || check_fail "mid: backup status claims protection: $st"
[[ $(j "$st" '["decision_reason"]') == *"still being copied"* ]] || check_fail "mid: status does not say why: $st"
assert_no_failover "$d/events.json" "mid: the copy was incomplete"
kill -TERM "$bpid" 2>/dev/null
wait_exit "$bpid" 30
assert_exit_not_signal "$EXIT_CODE" "mid: backup"
if v=$("$ROMULUS" verify --image "$d/img" 2>&1); then
  check_fail "mid: romulus verify accepted an image whose disk copy never finished: $v"
else
  log "mid: verify refuses the image: $v"
fi
hold=$(grep -F '"decision":"hold"' "$d/events.json" | grep -F 'still being copied' | head -n 1)
log "mid: $hold"

# ---- 2. the copy completes, then the primary dies
d="$T/full"
mkdir -p "$d"
port=$(free_port)
start_backup bpid "$T/full-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$d/img" --events-json "$d/events.json" --failover-timeout 1s
bg ppid "$T/full-primary.log" "$ROMULUS" replicate --guest "$GUEST" --sim-disk "$d/primary.disk" \
  --to "127.0.0.1:$port" --psk-file "$T/key" --interval 20ms --control-socket none
complete() { grep -q 'copy to the backup complete with epoch' "$T/full-primary.log"; }
wait_until 300 "the primary's copy of the disk to complete" complete
whole=$(sed -n 's/.*copy to the backup complete with epoch \([0-9]*\).*/\1/p' "$T/full-primary.log" | head -n 1)
wait_until 60 "5 commits after the copy completed" commit_at_least "$d/events.json" $((whole + 5))
kill9 "$ppid"
wait_event "$d/events.json" failover 30
wait_exit "$bpid" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "full: backup exit status $EXIT_CODE after failover"
assert_no_crash "$T"/*.log
fo_epoch=$(jcheck field "$d/events.json" failover last_committed_epoch)
[[ $fo_epoch -gt $whole ]] || check_fail "full: failover at epoch $fo_epoch, not after the copy completed ($whole)"
# Commits before $whole say not_resumable; from $whole on none does.
read -r partial late < <(python3 -c 'import json,sys
w=int(sys.argv[2]); p=l=0
for line in open(sys.argv[1]):
    try: e=json.loads(line)
    except ValueError: continue
    if e.get("event")!="commit": continue
    if "not_resumable" in e:
        if e["epoch"]<w: p+=1
        else: l+=1
print(p, l)' "$d/events.json" "$whole")
[[ $partial -ge 1 && $partial -eq $((whole - 1)) ]] ||
  check_fail "full: $partial epochs before $whole were marked not resumable (want every one of the $((whole - 1)))"
[[ $late -eq 0 ]] || check_fail "full: $late commits from epoch $whole on still say not_resumable"
if v=$("$ROMULUS" verify --image "$d/img" --json 2>&1); then
  read -r vepoch vrecs < <(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["epoch"], j.get("disk_records","none"))' "$v")
  [[ $vepoch -eq $fo_epoch ]] || check_fail "full: verify checked epoch $vepoch, failover said $fo_epoch"
  [[ $vrecs =~ ^[0-9]+$ && $vrecs -gt 0 ]] || check_fail "full: verify did not check the disk's records ($vrecs)"
  log "full: copy complete at epoch $whole after $partial partial epochs; failover at $fo_epoch; the 256 MiB disk holds exactly $vrecs records"
else
  check_fail "full: romulus verify: $v"
fi
finish
