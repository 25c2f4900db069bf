#!/usr/bin/env bash
# e2e: a resync costs what the backup lacks, not the guest's size
# (docs/PROTOCOL.md §3.9 and §6.3; issue 10, observation 7).
#
#   big      a 16 GiB guest with 16 MiB of data reaches PROTECTED, its first
#            sync sending only the written pages (issue 10, observation 7:
#            it used to stream every page and never get protected);
#   fresh    a 1 GiB guest with 16 MiB of data against a fresh backup: the
#            backup's HELD table is empty, the first sync sends only the
#            non-zero pages (the live pass and the paused part: at most twice
#            4096), not 262144.
#   stall    after commits, the backup is SIGSTOPped past the primary's ack
#            timeout: the primary reconnects, the backup tells it what its
#            committed image holds, and the resync sends only the pages that
#            changed (again at most twice the 4096 the workload rewrites),
#            keeping every other page: no full resync, no guest-sized staging.
#   restart  the backup is killed inside the commit of the first sync (after
#            the pages were written, before the commit): restarted on the same
#            image, it reads back what that sync wrote, never activates it,
#            and the primary's new first sync continues from it.
# Each case ends with a clean stop, no failover, no digest mismatch, and an
# image `romulus verify` accepts.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

make_key "$T/key"
# seed rewrites the first 16 MiB (4096 pages), nothing else. (Its counters wrap:
# every 256 passes those pages are all zero again, so "how many non-zero pages
# the backup holds" is not asserted exactly; what is sent and kept is.)
GUEST="sim:size=1G,workload=seed"
PAGES=262144

# synced LOG N: fields of the Nth "initial sync went through" line: "SENT KEPT"
synced() {
  grep -E "initial sync went through" "$1" | sed -n "${2}p" |
    sed -E 's/.*: ([0-9]+) sent, ([0-9]+) held by the backup already.*/\1 \2/'
}
syncs() { grep -c "initial sync went through" "$1" 2>/dev/null || true; }

finish_case() {  # finish_case NAME PPID BPID IMG EVENTS
  local name=$1 ppid=$2 bpid=$3
  alive "$ppid" || check_fail "$name: the primary died"
  grep -q "digest .* differs" "$T/$name-primary.log" && check_fail "$name: the primary saw a digest mismatch"
  kill -TERM "$ppid"
  wait_exit "$ppid" 30
  [[ $EXIT_CODE -eq 0 ]] || check_fail "$name: primary exited $EXIT_CODE after SIGTERM"
  wait_exit "$bpid" 30
  [[ $EXIT_CODE -eq 0 ]] || check_fail "$name: backup exited $EXIT_CODE after the clean stop"
  has_event "$5" failover && check_fail "$name: the backup failed over while the primary lived"
  assert_no_crash "$T/$name-backup.log" "$T/$name-primary.log"
  verify_image "$4"
}

# ---- big: 16 GiB, sparse image, PROTECTED
port=$(free_port)
start_backup bpid "$T/big-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$T/big.img" --events-json "$T/big-events.json"
bg ppid "$T/big-primary.log" "$ROMULUS" replicate --guest "sim:size=16G,workload=seed" --to "127.0.0.1:$port" \
  --psk-file "$T/key" --interval 50ms --events-json "$T/big-primary-events.json"
wait_event "$T/big-primary-events.json" protected 120
read -r sent kept <<<"$(synced "$T/big-primary.log" 1)"
log "big: the 16 GiB guest's first sync sent $sent pages, kept $kept; $(du -h "$T/big.img" | cut -f1) of image on disk"
[[ -n ${sent:-} && $sent -le 8192 ]] || check_fail "big: the first sync sent '${sent:-?}' pages, expected at most 8192"
wait_until 60 "big: 5 commits" commit_at_least "$T/big-events.json" 5
finish_case big "$ppid" "$bpid" "$T/big.img" "$T/big-events.json"
has_event "$T/big-primary-events.json" stop || check_fail "big: the primary wrote no stop event"
rm -f "$T"/big.img*

# ---- fresh + stall (one primary, one backup)
port=$(free_port)
start_backup bpid "$T/stall-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$T/stall.img" --events-json "$T/stall-events.json" --failover-timeout 10s --control-socket "$T/stall-b.sock"
bg ppid "$T/stall-primary.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$port" \
  --psk-file "$T/key" --interval 50ms --ack-timeout 300ms --events-json "$T/stall-primary-events.json" \
  --control-socket "$T/stall-p.sock"
wait_until 60 "fresh: 10 commits" commit_at_least "$T/stall-events.json" 10
# The backup's status follows the live session (not only its end).
st=$("$ROMULUS" ctl --json --socket "$T/stall-b.sock" status 2>&1)
[[ $st == *'"decision":"wait"'* && $st == *'"sessions":1'* ]] ||
  check_fail "fresh: the backup's status during its first session: $st"
assert_grep "$T/stall-primary.log" "it holds 0 non-zero pages" "fresh: the fresh backup's table is empty"
read -r sent kept <<<"$(synced "$T/stall-primary.log" 1)"
log "fresh: first sync sent $sent pages, kept $kept (guest: $PAGES pages, 4096 written)"
[[ -n ${sent:-} && $sent -le 8192 && $sent -ge 1 ]] || check_fail "fresh: the first sync sent '${sent:-?}' pages, expected 1..8192"
[[ $((sent + kept)) -ge $PAGES ]] || check_fail "fresh: sent + kept = $((sent + kept)), below the guest's $PAGES pages"

before=$(syncs "$T/stall-primary.log")
kill -STOP "$bpid"
wait_until 30 "stall: the primary declares the backup lost" grep -q "backup lost" "$T/stall-primary.log"
sleep 1  # the stall itself (not a wait for a result)
kill -CONT "$bpid"
wait_until 60 "stall: the resync went through" sh -c "[ \$(grep -c 'initial sync went through' '$T/stall-primary.log') -gt $before ]"
held=$(grep -Eo "it holds [0-9]+ non-zero pages" "$T/stall-primary.log" | tail -n1 | grep -Eo "[0-9]+")
read -r sent kept <<<"$(synced "$T/stall-primary.log" $((before + 1)))"
log "stall: the backup held $held non-zero pages; the resync sent $sent, kept $kept"
[[ -n ${sent:-} && $sent -le 8192 ]] || check_fail "stall: the resync sent '${sent:-?}' pages: a full resync, not what changed"
[[ ${kept:-0} -ge $((PAGES - 8192)) ]] || check_fail "stall: the resync kept only ${kept:-?} pages"
n=$(last_commit "$T/stall-events.json")
wait_until 60 "stall: commits continue after the resync" commit_at_least "$T/stall-events.json" $((n + 5))
# `ctl wait` blocks on an event: the primary is PROTECTED again after its
# loss (an event after the unprotected one), and the backup never failed over
# (no such event within a short wait: exit 1 with the reason).
lost_seq=$(jcheck field "$T/stall-primary-events.json" unprotected seq)
out=$("$ROMULUS" ctl --json --socket "$T/stall-p.sock" wait protected after "${lost_seq:-0}" within 30s 2>&1)
[[ $out == *'"event":"protected"'* ]] || check_fail "stall: ctl wait protected after the loss: $out"
out=$("$ROMULUS" ctl --socket "$T/stall-b.sock" wait failover within 200ms 2>&1)
rc=$?
[[ $rc -eq 1 && $out == *"no 'failover' event"* ]] || check_fail "stall: ctl wait failover (none expected) exited $rc: $out"
"$ROMULUS" ctl --socket "$T/stall-b.sock" wait Bad-Name >/dev/null 2>&1
[[ $? -eq 2 ]] || check_fail "stall: ctl wait with a malformed event name is not a usage error"
# The primary's events tell the same story (docs/EVENTS.md).
why=$(jcheck field "$T/stall-primary-events.json" unprotected reason)
[[ $why == "backup lost"* ]] || check_fail "stall: the primary's unprotected event says '$why', not the lost backup"
[[ $(jcheck count "$T/stall-primary-events.json" session_start) -ge 2 ]] || check_fail "stall: no second session_start event"
[[ $(jcheck field "$T/stall-primary-events.json" session_start held_table) == true ]] ||
  check_fail "stall: the resync's session_start says the backup sent no HELD table"
[[ $(jcheck count "$T/stall-primary-events.json" protected) -ge 2 ]] || check_fail "stall: no protected event after the resync"
# And the backup's: the first session ended, a new one started.
[[ $(jcheck count "$T/stall-events.json" session_start) -ge 2 ]] || check_fail "stall: the backup logged no second session"
has_event "$T/stall-events.json" session_end || check_fail "stall: the backup logged no session_end"
finish_case stall "$ppid" "$bpid" "$T/stall.img" "$T/stall-events.json"

# ---- restart: the backup dies inside the first sync's commit
port=$(free_port)
start_backup bpid "$T/restart-backup1.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$T/restart.img" --events-json "$T/restart-events1.json" --kill-at-commit state-tmp:1
bg ppid "$T/restart-primary.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$port" \
  --psk-file "$T/key" --interval 50ms
wait_exit "$bpid" 60
[[ $EXIT_CODE -eq 137 ]] || check_fail "restart: the backup exited $EXIT_CODE, expected 137 (killed in the commit)"
has_event "$T/restart-events1.json" commit && check_fail "restart: the killed backup recorded a commit"
out=$("$ROMULUS" verify --image "$T/restart.img" 2>&1)
rc=$?
log "restart: verify of the unfinished image (exit $rc): $out"
[[ $rc -ne 0 ]] || check_fail "restart: verify accepted an image whose first sync never committed: $out"
# The primary keeps running UNPROTECTED and reconnects to the restarted backup.
start_backup bpid "$T/restart-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$T/restart.img" --events-json "$T/restart-events.json"
wait_until 60 "restart: commits after the restart" commit_at_least "$T/restart-events.json" 5
assert_grep "$T/restart-backup.log" "resuming an unfinished first sync: the image holds [0-9]+ non-zero pages" \
  "restart: the backup kept what the interrupted sync wrote"
# The primary's second connection (the first to the restarted backup) was
# told what that image holds.
held=$(grep -Eo "it holds [0-9]+ non-zero pages" "$T/restart-primary.log" | sed -n 2p | grep -Eo "[0-9]+")
log "restart: the restarted backup held ${held:-?} non-zero pages of the unfinished sync"
[[ -n ${held:-} ]] || check_fail "restart: the primary was not told what the restarted backup holds"
finish_case restart "$ppid" "$bpid" "$T/restart.img" "$T/restart-events.json"
finish
