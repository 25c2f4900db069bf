#!/usr/bin/env bash
# e2e: the backup is restarted with a --max-cache-size below the cache the
# operator set live with `ctl set cache-size`.
# Proves:
#   - the primary does not stay refused (and unprotected) forever: it retries
#     with its configured --cache-size, says so, and is PROTECTED again;
#   - the new session runs with that size on both ends, and every epoch it
#     acks has a commit with the same digest; the final image verifies.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"


make_key "$T/key"
port=$(free_port)
start_backup b1 "$T/backup1.log" --listen "127.0.0.1:$port" --psk-file "$T/key" --image "$T/img" \
  --events-json "$T/events1.json" --max-cache-size 16M
bg ppid "$T/primary.log" "$ROMULUS" replicate --guest "sim:size=32M,workload=hotset" --to "127.0.0.1:$port" \
  --psk-file "$T/key" --interval 20ms --cache-size 4M --stats-json "$T/stats.json" --control-socket "$T/p.sock"
ctl() { "$ROMULUS" ctl --json --socket "$T/p.sock" "$@"; }
protected() { [[ $(rj_status "$T/p.sock" protection) == PROTECTED ]]; }
wait_until 120 "primary PROTECTED" protected
out=$(ctl set cache-size 12M 2>&1) || check_fail "set cache-size 12M: $out"
grown() { [[ $(rj_status "$T/p.sock" cache_size) -eq $((12 << 20)) ]]; }
wait_until 60 "the 12M cache applied live" grown

# The backup host restarts, its operator now allowing at most 8M.
kill9 "$b1"
wait_until 30 "the primary notices the lost backup" grep -q "backup lost" "$T/primary.log"
start_backup b2 "$T/backup2.log" --listen "127.0.0.1:$port" --psk-file "$T/key" --image "$T/img" \
  --events-json "$T/events2.json" --max-cache-size 8M
wait_until 60 "the primary falls back to its configured cache" \
  grep -q "retrying with the configured cache of 4 MiB" "$T/primary.log"
wait_until 120 "primary PROTECTED again" protected
[[ $(rj_status "$T/p.sock" cache_size) -eq $((4 << 20)) ]] || check_fail "cache after the fallback: $RJ_REPLY"
assert_grep "$T/primary.log" "exceeds this backup's limit" "the refusal names the backup's limit"
assert_grep "$T/backup2.log" "cache 1024 pages" "the new session uses the configured 4M cache"
from=$(jcheck last-acked "$T/stats.json")
more_acked() { [[ $(jcheck last-acked "$T/stats.json") -ge $((from + 20)) ]]; }
wait_until 60 "20 more acked epochs in the new session" more_acked

kill -TERM "$ppid" 2>/dev/null
wait_exit "$ppid" 30
prc=$EXIT_CODE
wait_exit "$b2" 30
brc=$EXIT_CODE
[[ $prc -eq 0 ]] || check_fail "primary exited $prc"
[[ $brc -eq 0 ]] || check_fail "backup exited $brc (expected 0 after a clean stop)"
assert_no_crash "$T/backup2.log" "$T/primary.log"
verify_image "$T/img"
finish
