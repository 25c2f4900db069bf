#!/usr/bin/env bash
# e2e: `romulus ctl set cache-size` on a running pair over TLS-PSK on
# loopback (docs/CONTROL.md "Cache size", docs/PROTOCOL.md §3.8).
# Proves:
#   - a size within the backup's --max-cache-size applies live ("next
#     epoch"): both processes log the resize, `status` shows it, there is no
#     resynchronisation, and replication carries on;
#   - a size above the backup's limit is refused up front (exit 2, the limit
#     named) and changes nothing;
#   - every acked epoch, before and after the resizes (grow, then shrink),
#     has the same digest on the backup, which therefore decoded every delta
#     against an identical cache; the final image verifies.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"


make_key "$T/key"
port=$(free_port)
start_backup bpid "$T/backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" --image "$T/img" \
  --events-json "$T/events.json" --max-cache-size 16M
bg ppid "$T/primary.log" "$ROMULUS" replicate --guest "sim:size=64M,workload=hotset" --to "127.0.0.1:$port" \
  --psk-file "$T/key" --interval 20ms --cache-size 4M --stats-json "$T/stats.json" --control-socket "$T/p.sock"
ctl() { "$ROMULUS" ctl --json --socket "$T/p.sock" "$@"; }
protected() { [[ $(rj_status "$T/p.sock" protection) == PROTECTED ]]; }
wait_until 120 "primary PROTECTED via ctl status" protected
[[ $(rj_status "$T/p.sock" cache_size) -eq $((4 << 20)) ]] || check_fail "initial cache_size: $RJ_REPLY"

# Above the backup's limit: refused before anything is sent.
out=$(ctl set cache-size 32M 2>&1)
rc=$?
log "set cache-size 32M -> exit $rc: $out"
[[ $rc -eq 2 ]] || check_fail "set cache-size 32M above the backup's 16M should exit 2 (got $rc)"
grep -q "max-cache-size" <<<"$out" || check_fail "refusal should name --max-cache-size: $out"
[[ $(rj_status "$T/p.sock" cache_size_next_session) -eq $((4 << 20)) ]] || check_fail "a refused size changed the next session's: $RJ_REPLY"

# Grow live, then shrink live.
for size in 12M 2M; do
  out=$(ctl set cache-size "$size" 2>&1) || check_fail "set cache-size $size failed: $out"
  log "set cache-size $size: $out"
  [[ $(rj_get "$out" applies) == "next epoch" ]] || check_fail "set cache-size $size should apply at the next epoch: $out"
  bytes=$(rj_get "$out" cache_size)
  applied() { [[ $(rj_status "$T/p.sock" cache_size) -eq $bytes ]]; }
  wait_until 60 "status cache_size $bytes" applied
  pages=$((bytes / 4096))
  has_resize() { grep -q "mirror cache resized to $pages pages" "$T/backup.log"; }
  wait_until 30 "backup resized its mirror to $pages pages" has_resize
  # Replication carries on on top of the resized caches.
  from=$(jcheck last-acked "$T/stats.json")
  more_acked() { [[ $(jcheck last-acked "$T/stats.json") -ge $((from + 10)) ]]; }
  wait_until 60 "10 more acked epochs after the $size resize" more_acked
done

kill -TERM "$ppid" 2>/dev/null
wait_exit "$ppid" 30
prc=$EXIT_CODE
wait_exit "$bpid" 30
brc=$EXIT_CODE
[[ $prc -eq 0 ]] || check_fail "primary exited $prc"
[[ $brc -eq 0 ]] || check_fail "backup exited $brc (expected 0 after a clean stop)"
if ! out=$(jcheck join "$T/stats.json" "$T/events.json" --min-acked 20 --require-stop); then
  check_fail "acked digests vs backup commits: $out"
else
  log "$out"
fi
# One session from start to end (the backup's session_start events): the
# resizes were live, not resyncs.
syncs=$(grep -c '"event":"session_start"' "$T/events.json")
[[ $syncs -eq 1 ]] || check_fail "expected one session (one first sync), saw $syncs"
grep -q "backup lost" "$T/primary.log" && check_fail "the primary lost its backup"
assert_grep "$T/primary.log" "page cache resized to 12.*at epoch" "primary logs the grow"
assert_grep "$T/primary.log" "page cache resized to 2.*at epoch" "primary logs the shrink"
assert_no_crash "$T/backup.log" "$T/primary.log"
verify_image "$T/img"
finish
