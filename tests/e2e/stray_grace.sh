#!/usr/bin/env bash
# e2e: strangers during the grace period after a corrupt frame
# (issue 10, observation 5; docs/FAILURE-MODEL.md §4).
#
# A damaged link ends the session; the primary reconnects, or cannot. While
# the backup waits for it, stray connections keep arriving (idle ones that
# never say a word, and ones that send garbage). Strays must neither hold the
# session slot nor move the backup's deadline:
#   back     a corrupt frame; the primary comes back through the proxy: no
#            failover, commits resume, the run ends with a clean stop.
#   noreturn the connection cut mid-frame (EOF: proves nothing about the
#            primary) and the primary cannot come back (proxy --single): the
#            backup waits its whole --failover-timeout of silence (never a
#            stray's handshake timeout), fences (the fence SIGKILLs the
#            primary), then activates its last committed epoch. (After a
#            corrupt frame it would hold instead: the primary was alive then
#            and runs unprotected since, tests/e2e/corruption.sh.)
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

PROXY="$E2E_LIB/faultproxy.py"
GUEST="sim:size=16M,workload=hotset"

# strays PORT SECONDS: hold idle connections and keep opening new ones, some
# sending garbage, until SECONDS pass. Bounded: exits by itself.
strays() {
  python3 - "$1" "$2" <<'EOF'
import socket, sys, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
end = time.time() + secs
held, n = [], 0
print("strays: started", flush=True)
while time.time() < end:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
        if n % 3 == 1:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n" * 4)
        held.append(s)
        n += 1
    except OSError:
        pass
    if len(held) > 40:
        held.pop(0).close()
    time.sleep(0.05)
print("strays: opened %d connections" % n, flush=True)
EOF
}

run_case() {  # run_case NAME EXPECT(resync|failover) PROXY_ARGS...
  local name=$1 expect=$2
  shift 2
  local d="$T/$name" bport pport bpid ppid xpid spid fence
  mkdir -p "$d"
  bport=$(free_port)
  if [[ $expect == failover ]]; then
    fence="kill -9 \$(cat $d/primary.pid)"
  else
    fence="false"  # must never run: the primary stays alive
  fi
  start_backup bpid "$T/$name-backup.log" --listen "127.0.0.1:$bport" --insecure \
    --image "$d/img" --events-json "$d/events.json" --failover-timeout 3s --fence-cmd "$fence"
  bg xpid "$T/$name-proxy.log" python3 "$PROXY" --to "127.0.0.1:$bport" --port-file "$d/proxy.port" "$@"
  wait_until 10 "$name: faultproxy listening" test -s "$d/proxy.port"
  pport=$(cat "$d/proxy.port")
  bg ppid "$T/$name-primary.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$pport" \
    --insecure --interval 20ms --stats-json "$d/stats.json"
  echo "$ppid" >"$d/primary.pid"
  # Strays from the start, through the fault and the grace period.
  bg spid "$T/$name-strays.log" strays "$bport" 12
  wait_until 30 "$name: the proxy injects its fault" grep -Eq "FLIPPED|TRUNCATING" "$T/$name-proxy.log"
  local fault_at
  fault_at=$(last_commit "$d/events.json")
  log "$name: fault after epoch $fault_at"
  if [[ $expect == resync ]]; then
    wait_until 60 "$name: commits resume after the fault" commit_at_least "$d/events.json" $((fault_at + 20))
    wait_exit "$spid" 30
    has_event "$d/events.json" failover &&
      check_fail "$name: the backup failed over while the primary was alive: $(jcheck field "$d/events.json" failover reason)"
    alive "$ppid" || check_fail "$name: the primary died"
    kill -TERM "$ppid"
    wait_exit "$ppid" 30
    wait_exit "$bpid" 30
    [[ $EXIT_CODE -eq 0 ]] || check_fail "$name: backup exited $EXIT_CODE after the clean stop"
    has_event "$d/events.json" failover && check_fail "$name: failover event after the clean stop"
  else
    wait_exit "$bpid" 60
    [[ $EXIT_CODE -eq 0 ]] || check_fail "$name: backup exited $EXIT_CODE, expected 0 after activating"
    alive "$ppid" && check_fail "$name: the primary lives on after the activation (two copies)"
    has_event "$d/events.json" failover || fail "$name: no failover event"
    local fo_epoch reason
    fo_epoch=$(jcheck field "$d/events.json" failover last_committed_epoch)
    reason=$(jcheck field "$d/events.json" failover reason)
    log "$name: failover from epoch $fo_epoch: $reason"
    [[ $fo_epoch -eq $(last_commit "$d/events.json") ]] ||
      check_fail "$name: failover epoch $fo_epoch is not the last committed one"
    # The decision names the silence, measured on the backup's own clock,
    # of at least the whole failover timeout, after the lost connection.
    [[ $reason =~ primary\ silent\ for\ ([0-9]+)\ ms ]] || check_fail "$name: reason does not name the silence: $reason"
    [[ ${BASH_REMATCH[1]:-0} -ge 3000 ]] || check_fail "$name: activated after ${BASH_REMATCH[1]:-?} ms of silence, under the 3 s timeout"
    [[ $reason == *connection-lost* ]] || check_fail "$name: reason does not name the lost connection: $reason"
  fi
  kill9 "$xpid"
  kill9 "$spid"
  assert_grep "$T/$name-strays.log" "strays: started" "$name: strays ran"
  local n_strays
  n_strays=$(grep -Eo "dropped [0-9]+ connection" "$T/$name-backup.log" | grep -Eo "[0-9]+" | paste -sd+ | bc 2>/dev/null || echo "?")
  log "$name: the backup dropped ${n_strays:-?} stray connection(s) in its summaries"
  assert_no_crash "$T/$name-backup.log" "$T/$name-primary.log"
  verify_image "$d/img"
}

run_case back resync --fault flip --after 200000 --min-epoch 5
run_case noreturn failover --fault truncate --after 200000 --min-epoch 5 --single
finish
