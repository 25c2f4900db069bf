# Shared helpers for tests/e2e/*.sh (sourced, never run as a test).
#
#   source "$(dirname "$0")/lib/common.sh"; e2e_init "$@"
#
# Gives: $ROMULUS (absolute path of the binary), $T (a fresh temp dir, removed
# at exit unless E2E_KEEP=1 or the test failed), $E2E_LIB, and helpers.
# Every process started with `bg` is killed (SIGKILL, by pid) at exit.
# Waits are bounded: `wait_until` polls a condition with a deadline and the
# test FAILs when it expires.
#
# Helpers (see each one's comment below):
#   bg VAR LOG CMD...             start CMD in the background, pid in VAR
#   wait_until SECS WHAT CMD...   poll CMD until true; FAIL after SECS
#   wait_exit PID SECS            wait for PID to exit; EXIT_CODE = its status
#   wait_event EVENTS TYPE SECS   wait until EVENTS logs an event of TYPE; FAIL after SECS
#   has_event EVENTS TYPE         true once EVENTS logs an event of TYPE
#   last_commit EVENTS, commit_at_least EVENTS K
#   rj_*                          scripts/lib/romulus-json.sh: JSON values, events,
#                                 stats lines, `ctl --json` (rj_status, rj_ctl_wait)
#   assert_no_crash LOG...        no crash signature (sanitizers, SIGSEGV/SIGBUS/
#                                 SIGILL/SIGFPE/SIGKILL texts, abort, stack smashing)
#   assert_exit_not_signal CODE WHAT
#                                 CODE (e.g. $EXIT_CODE) is not "killed by a signal"
#                                 (> 128) for a process expected to exit by itself
#   assert_no_failover EVENTS WHY no "failover" event in EVENTS (the first law:
#                                 no second live copy while the primary lives)
#   assert_grep FILE REGEX WHAT, verify_image IMG, start_backup VAR LOG ARGS...

set -u
set -o pipefail

E2E_NAME=$(basename "$0" .sh)
E2E_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_PIDS=()
E2E_FAILED=0
E2E_CHECK_FAILS=0

_e2e_cleanup() {
  local rc=$?
  local p
  for p in "${E2E_PIDS[@]}"; do
    kill -9 "$p" 2>/dev/null
  done
  for p in "${E2E_PIDS[@]}"; do
    { wait "$p"; } 2>/dev/null
  done
  if [[ $rc -ne 0 || $E2E_FAILED -ne 0 || ${E2E_KEEP:-0} == 1 ]]; then
    echo "$E2E_NAME: logs kept in $T" >&2
  else
    rm -rf "$T"
  fi
}

e2e_init() {
  if [[ $# -lt 1 || ! -x "$1" ]]; then
    echo "usage: bash $0 /path/to/romulus" >&2
    exit 2
  fi
  ROMULUS=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
  RJ_ROMULUS=$ROMULUS   # rj_ctl, rj_status, rj_ctl_wait
  T=$(mktemp -d "/tmp/e2e-$E2E_NAME.XXXXXX")
  trap _e2e_cleanup EXIT
  trap 'exit 130' INT TERM
  E2E_T0=$(date +%s.%N)
}

log() { echo "[$E2E_NAME $(date +%H:%M:%S.%3N)] $*"; }

# Print the tail of each named log (diagnostics on failure).
show_logs() {
  local f
  for f in "$@"; do
    [[ -f $f ]] || continue
    echo "----- tail of $f -----"
    tail -n 25 "$f"
  done
}

# fail REASON: the test fails now.
fail() {
  E2E_FAILED=1
  echo "FAIL: $E2E_NAME: $*"
  show_logs "$T"/*.log
  exit 1
}

# check_fail REASON: record a failed check but carry on (so one run shows
# every broken check); `finish` turns it into a failing exit.
check_fail() {
  E2E_FAILED=1
  E2E_CHECK_FAILS=$((E2E_CHECK_FAILS + 1))
  echo "FAIL: $E2E_NAME: $*"
}

finish() {
  local secs
  secs=$(python3 -c "import time; print('%.1f' % (time.time() - $E2E_T0))")
  if [[ $E2E_CHECK_FAILS -ne 0 ]]; then
    echo "FAIL: $E2E_NAME: $E2E_CHECK_FAILS check(s) failed (${secs}s)"
    exit 1
  fi
  echo "PASS: $E2E_NAME (${secs}s)"
  exit 0
}

# A port nobody listens on right now (the kernel picks it). A race with
# another process is possible but rare; start_backup retries on a bind error.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

make_key() {
  (umask 077 && openssl rand -hex 32 >"$1") || fail "openssl rand failed"
  chmod 600 "$1"
}

# bg VAR LOGFILE CMD...: start CMD in the background, stdout+stderr to LOGFILE,
# its pid in VAR (and remembered for cleanup).
bg() {
  local _bg_var=$1 _bg_log=$2
  shift 2
  "$@" >"$_bg_log" 2>&1 &
  local _bg_pid=$!
  E2E_PIDS+=("$_bg_pid")
  printf -v "$_bg_var" '%s' "$_bg_pid"
}

alive() { kill -0 "$1" 2>/dev/null; }

# kill9 PID: SIGKILL a process we started and reap it (quietly).
kill9() {
  kill -9 "$1" 2>/dev/null
  { wait "$1"; } 2>/dev/null
  return 0
}

# wait_until SECONDS DESCRIPTION CMD...: poll CMD every 50 ms until it
# succeeds; FAIL the test with DESCRIPTION when SECONDS pass first.
wait_until() {
  local secs=$1 what=$2
  shift 2
  local deadline
  deadline=$(($(date +%s%N) + secs * 1000000000))
  while ! "$@" >/dev/null 2>&1; do
    if (($(date +%s%N) > deadline)); then
      fail "timed out after ${secs}s waiting for: $what"
    fi
    sleep 0.05
  done
}

# wait_exit PID SECONDS: wait for a process we started to exit; sets
# EXIT_CODE. FAILs (after SIGKILLing it) if it is still running at the deadline.
wait_exit() {
  local pid=$1 secs=$2
  # `tail --pid` returns when the process exits; `timeout` bounds it. The
  # job notice ("Killed") of a child that died by a signal is silenced by
  # reaping it inside a redirected block.
  { timeout "$secs" tail --pid="$pid" -s 0.05 -f /dev/null; } 2>/dev/null
  if [[ $? -eq 124 ]] && alive "$pid"; then
    kill -9 "$pid" 2>/dev/null
    { wait "$pid"; } 2>/dev/null
    fail "process $pid did not exit within ${secs}s (killed)"
  fi
  { wait "$pid"; } 2>/dev/null
  EXIT_CODE=$?
}

# JSON checks (python3; jq is not assumed).
jcheck() { python3 "$E2E_LIB/check.py" "$@"; }

# Events, stats lines and `ctl --json` answers are read through the library
# the Xen lab's dom0 uses too (rj_* functions: scripts/lib/romulus-json.sh).
# shellcheck source=../../../scripts/lib/romulus-json.sh
. "$E2E_LIB/../../../scripts/lib/romulus-json.sh"

# Highest committed epoch in an events file (0 if none yet).
last_commit() {
  local e
  e=$(rj_max "$1" epoch event commit) || e=0
  echo "$e"
}

# commit_at_least EVENTS K: true once a commit with epoch >= K is logged.
commit_at_least() { [[ $(last_commit "$1") -ge $2 ]]; }

# has_event EVENTS TYPE: true once an event of that type is logged.
has_event() { [[ $(rj_event_count "$1" "$2") -gt 0 ]]; }

# wait_event EVENTS TYPE SECONDS: wait until an event of TYPE (commit,
# failover, stop) is logged in EVENTS; FAIL the test when SECONDS pass first.
wait_event() {
  wait_until "$3" "a \"$2\" event in $(basename "$1")" has_event "$1" "$2"
}

# What a crashed process or the shell that reaped it leaves in a log:
# sanitizers, the shell's job notices for fatal signals (SIGSEGV, SIGBUS,
# SIGILL, SIGFPE, SIGABRT, SIGKILL), glibc's fortify/stack protector and
# allocator aborts, C++ terminate.
E2E_CRASH_RX='AddressSanitizer|UndefinedBehaviorSanitizer|ThreadSanitizer|LeakSanitizer|runtime error:'
E2E_CRASH_RX+='|Segmentation fault|Bus error|Illegal instruction|Floating point exception|Aborted|Killed'
E2E_CRASH_RX+='|core dumped|stack smashing detected|buffer overflow detected|terminate called'
E2E_CRASH_RX+='|std::bad_alloc|double free|free\(\): invalid|malloc\(\): |corrupted size'

# No sign of a crash in these logs.
assert_no_crash() {
  local f
  for f in "$@"; do
    if grep -Eq -- "$E2E_CRASH_RX" "$f"; then
      check_fail "crash signature in $f: $(grep -Em1 -- "$E2E_CRASH_RX" "$f")"
    fi
  done
}

# assert_exit_not_signal CODE WHAT: CODE (the status `wait_exit` left in
# EXIT_CODE) must not be 128+N, i.e. the process was not killed by signal N
# (SIGBUS = 135, SIGSEGV = 139, SIGABRT = 134, SIGKILL = 137). A process that
# dies of a signal writes nothing to its own log, so assert_no_crash cannot see it.
# For processes the test did not kill itself.
assert_exit_not_signal() {
  local code=$1 what=$2
  if [[ ! $code =~ ^[0-9]+$ ]]; then
    check_fail "$what: exit status '$code' is not a number"
    return 1
  fi
  if ((code > 128)); then
    local sig
    sig=$(kill -l $((code - 128)) 2>/dev/null || echo "?")
    check_fail "$what: killed by signal $((code - 128)) (SIG$sig), exit status $code"
    return 1
  fi
  return 0
}

# assert_no_failover EVENTS WHY: EVENTS holds no "failover" event. For
# scenarios where the primary stays alive: a failover there would make a
# second live copy of the guest.
assert_no_failover() {
  local line
  line=$(grep -F '"event":"failover"' "$1" 2>/dev/null | head -n 1)
  if [[ -n $line ]]; then
    check_fail "${2:-no failover expected}: the backup failed over while the primary was alive: $line"
    return 1
  fi
  return 0
}

# assert_grep FILE REGEX WHAT: FILE must contain a line matching REGEX.
assert_grep() {
  if ! grep -Eq -- "$2" "$1"; then
    check_fail "$3: no line matching /$2/ in $(basename "$1")"
    return 1
  fi
  return 0
}

# verify_image IMG: `romulus verify` must prove the image is an exact checkpoint.
verify_image() {
  local out rc
  out=$("$ROMULUS" verify --image "$1" 2>&1)
  rc=$?
  if [[ $rc -ne 0 ]]; then
    check_fail "romulus verify --image $1 exited $rc: $out"
    return 1
  fi
  log "verify: $out"
  return 0
}

# start_backup VAR LOG ARGS...: start `romulus restore ARGS` and wait until it
# listens (FAIL if it exits first or does not listen within 10 s).
start_backup() {
  local _sb_var=$1 _sb_log=$2
  shift 2
  local _sb_pid
  # Tests run both ends on one host, where no partition can happen: a test
  # that does not choose a fence command runs the backup with --no-fence.
  case " $* " in
    *" --fence-cmd "* | *" --no-fence "*) ;;
    *) set -- "$@" --no-fence ;;
  esac
  bg _sb_pid "$_sb_log" "$ROMULUS" restore "$@"
  local deadline=$(($(date +%s%N) + 10 * 1000000000))
  until grep -q "backup listening on" "$_sb_log" 2>/dev/null; do
    if ! alive "$_sb_pid"; then
      fail "backup exited before listening (args: $*)"
    fi
    (($(date +%s%N) > deadline)) && fail "backup did not listen within 10 s"
    sleep 0.05
  done
  printf -v "$_sb_var" '%s' "$_sb_pid"
}
