#!/usr/bin/env bash
# e2e: bad command lines. Every case must exit 2 promptly with exactly one
# line on stderr ("romulus CMD: ...") that names the problem, print nothing
# on stdout, and not crash. Nothing listens on the --to port used here, so a
# case that is wrongly accepted shows up as a process that keeps running
# (caught by the 10 s bound) or as a different exit status.
# Then three runtime edges: --help on stdout and log lines on stderr only;
# a restarted backup appends to its --events-json (the old lines stay); an
# events file that cannot be written (/dev/full) is reported once and the
# backup carries on.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

make_key "$T/key"
echo "abcd" >"$T/short.key" && chmod 600 "$T/short.key"
openssl rand -hex 32 >"$T/world.key" && chmod 644 "$T/world.key"
printf 'zz%.0s' {1..40} >"$T/nothex.key" && chmod 600 "$T/nothex.key"
mkdir -p "$T/dir.key"
openssl rand -hex 32 >"$T/noperm.key" && chmod 000 "$T/noperm.key"
dead=$(free_port)
G=(--guest "sim:size=16M,workload=hotset" --to "127.0.0.1:$dead")
N=0

# expect_usage REGEX ARGS...: `romulus ARGS` exits 2 with one stderr line matching REGEX.
expect_usage() {
  local rx=$1
  shift
  N=$((N + 1))
  local out="$T/case$N.out" err="$T/case$N.err" rc
  timeout -k 2 10 "$ROMULUS" "$@" >"$out" 2>"$err" </dev/null
  rc=$?
  local lines
  lines=$(grep -c . "$err")
  if [[ $rc -ne 2 ]]; then
    check_fail "romulus $*: exit status $rc, expected 2 (stderr: $(head -c 300 "$err"))"
  elif [[ $lines -ne 1 ]]; then
    check_fail "romulus $*: $lines lines on stderr, expected exactly one: $(head -c 400 "$err")"
  elif ! grep -Eq -- "$rx" "$err"; then
    check_fail "romulus $*: error does not match /$rx/: $(cat "$err")"
  elif [[ -s $out ]]; then
    check_fail "romulus $*: unexpected stdout: $(head -c 200 "$out")"
  else
    printf '  ok  %s\n        -> %s\n' "${*//$T/\$T}" "$(sed "s|$T|\$T|g" "$err")"
  fi
  assert_no_crash "$err"
}

R=(replicate "${G[@]}" --psk-file "$T/key")
expect_usage "^romulus replicate: --interval: .*unit" "${R[@]}" --interval 25
expect_usage "^romulus replicate: --interval: .*between 5ms and 60s" "${R[@]}" --interval 1ms
expect_usage "^romulus replicate: --interval: bad duration" "${R[@]}" --interval abc
expect_usage "^romulus replicate: --interval: .*between" "${R[@]}" --interval 2m
expect_usage "^romulus replicate: --cache-size: .*64Q" "${R[@]}" --cache-size 64Q
expect_usage "^romulus replicate: --cache-size: .*multiple of 4K" "${R[@]}" --cache-size 5000
expect_usage "^romulus replicate: unrecognised option '--bogus'" "${R[@]}" --bogus
expect_usage "^romulus replicate: --to HOST:PORT is required" replicate --guest sim:size=16M --psk-file "$T/key"
expect_usage "^romulus replicate: --to: " replicate --guest sim:size=16M --to nohostport --psk-file "$T/key"
expect_usage "^romulus replicate: .*(--psk-file|--insecure)" replicate "${G[@]}"
expect_usage "^romulus replicate: choose one of" replicate "${G[@]}" --psk-file "$T/key" --insecure
expect_usage "^romulus replicate: --guest: .*3K" replicate --guest sim:size=3K --to "127.0.0.1:$dead" --psk-file "$T/key"
expect_usage "^romulus replicate: --guest: " replicate --guest sim:size=16M,workload=nope --to "127.0.0.1:$dead" --psk-file "$T/key"
expect_usage "^romulus replicate: .*exactly one of --guest" replicate --to "127.0.0.1:$dead" --psk-file "$T/key"
expect_usage "^romulus replicate: --kill-at: unknown phase 'zz'" "${R[@]}" --kill-at zz
expect_usage "^romulus replicate: --kill-at: .*positive integer" "${R[@]}" --kill-at c:0
expect_usage "^romulus replicate: --kill-at: .*positive integer" "${R[@]}" --kill-at m:x
expect_usage "^romulus replicate: --ack-timeout" "${R[@]}" --ack-timeout 150ms --heartbeat 100ms
expect_usage "^romulus replicate: --suspend-timeout: .*between 100ms and 10m" "${R[@]}" --suspend-timeout 10ms
expect_usage "^romulus replicate: --suspend-timeout: .*between 100ms and 10m" "${R[@]}" --suspend-timeout 11m
expect_usage "^romulus replicate: --suspend-timeout: bad duration" "${R[@]}" --suspend-timeout soon
expect_usage "^romulus replicate: --device-model-timeout: .*between 1s and 10m" "${R[@]}" --device-model-timeout 500ms
expect_usage "^romulus replicate: --device-model-timeout: .*between 1s and 10m" "${R[@]}" --device-model-timeout 11m
expect_usage "^romulus replicate: --device-model-timeout: bad duration" "${R[@]}" --device-model-timeout soon
# Counts: Boost would wrap "-1" into 2^64-1 ("run for ever"); a count is digits only.
expect_usage "^romulus replicate: --epochs: '-1' is not a whole number from 0 to " "${R[@]}" --epochs -1
expect_usage "^romulus replicate: --epochs: '-1' is not a whole number" "${R[@]}" --epochs=-1
expect_usage "^romulus replicate: --epochs: '1e3' is not a whole number" "${R[@]}" --epochs 1e3
expect_usage "^romulus replicate: --epochs: '' is not a whole number" "${R[@]}" --epochs ""
expect_usage "^romulus replicate: --epochs: '99999999999999999999' is not a whole number" \
  "${R[@]}" --epochs 99999999999999999999
expect_usage "^romulus replicate: --epochs: 2000000000000 is out of range" "${R[@]}" --epochs 2000000000000
expect_usage "^romulus replicate: --kill-at: .*positive integer" "${R[@]}" --kill-at c:-1
expect_usage "^romulus replicate: --duration: must be positive" "${R[@]}" --duration 0s
expect_usage "^romulus replicate: --stats-json: empty value" "${R[@]}" --stats-json ""
expect_usage "^romulus replicate: --netbuf-dev: empty value" "${R[@]}" --netbuf-dev ""
expect_usage "^romulus replicate: --netbuf-vif: empty value" "${R[@]}" --netbuf-vif vif3.0 --netbuf-vif ""
expect_usage "^romulus replicate: --netbuf-vif vif3.0 given twice" "${R[@]}" --netbuf-vif vif3.0 --netbuf-vif vif3.0
expect_usage "^romulus replicate: --netbuf-vif cannot be combined" "${R[@]}" --netbuf-dev eth9 --netbuf-vif vif3.0
# Addresses: port 0 and a missing host are refused before any connect.
expect_usage "^romulus replicate: --to: '127.0.0.1:0' needs a non-zero port" \
  replicate --guest sim:size=16M --to 127.0.0.1:0 --psk-file "$T/key"
expect_usage "^romulus replicate: --to: ':$dead' needs a host" replicate --guest sim:size=16M --to ":$dead" --psk-file "$T/key"
expect_usage "^romulus replicate: --to: '\*:$dead' needs a host" replicate --guest sim:size=16M --to "*:$dead" --psk-file "$T/key"
expect_usage "^romulus replicate: --to: bad port" replicate --guest sim:size=16M --to "127.0.0.1:-1" --psk-file "$T/key"
expect_usage "^romulus replicate: --to: bad port" replicate --guest sim:size=16M --to "127.0.0.1:65536" --psk-file "$T/key"
# Key files.
expect_usage "^romulus replicate: key .*short.key.* at least 32" replicate "${G[@]}" --psk-file "$T/short.key"
expect_usage "^romulus replicate: key file .*world.key.* chmod 600" replicate "${G[@]}" --psk-file "$T/world.key"
expect_usage "^romulus replicate: key file .*nothex.key.* not hexadecimal" replicate "${G[@]}" --psk-file "$T/nothex.key"
expect_usage "^romulus replicate: key file .*: No such file" replicate "${G[@]}" --psk-file "$T/missing.key"
expect_usage "^romulus replicate: key file .*dir.key.* not a regular file" replicate "${G[@]}" --psk-file "$T/dir.key"
if [[ $(id -u) -ne 0 ]]; then
  # (root reads a mode-000 file without trouble, so this case needs a normal user)
  expect_usage "^romulus replicate: key file .*noperm.key.*(Permission denied|cannot)" \
    replicate "${G[@]}" --psk-file "$T/noperm.key"
fi
# restore
expect_usage "^romulus restore: --listen ADDR:PORT is required" restore --no-fence --psk-file "$T/key" --image "$T/img"
expect_usage "^romulus restore: --listen: " restore --listen nohostport --no-fence --psk-file "$T/key" --image "$T/img"
expect_usage "^romulus restore: key file .*world.key.* chmod 600" \
  restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/world.key" --image "$T/img"
expect_usage "^romulus restore: .*(--psk-file|--insecure)" restore --listen "127.0.0.1:$dead" --no-fence --image "$T/img"
expect_usage "^romulus restore: --failover-timeout: .*between 20ms and 10m" \
  restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/key" --failover-timeout 5ms --image "$T/img"
expect_usage "^romulus restore: --max-cache-size: " \
  restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/key" --max-cache-size 1X --image "$T/img"
# Byte limits below one page are refused (they used to mean "no limit").
expect_usage "^romulus restore: --max-guest-size: must be at least 4 KiB \\(got '0'\\)" \
  restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/key" --max-guest-size 0 --image "$T/img"
expect_usage "^romulus restore: --max-cache-size: must be at least 4 KiB \\(got '100'\\)" \
  restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/key" --max-cache-size 100 --image "$T/img"
expect_usage "^romulus restore: --max-disk-spill: " \
  restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/key" --max-disk-spill -1 --image "$T/img"
expect_usage "^romulus restore: --max-disk-staging: must be at least 64 KiB" \
  restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/key" --max-disk-staging 4K --image "$T/img"
expect_usage "^romulus restore: unrecognised option" restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/key" --frobnicate
expect_usage "^romulus restore: --domain-name, --vif-script, --no-vifs, --disk-dir, --device-model and --guest-kernel-dir need --xen" \
  restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/key" --image "$T/img" --no-vifs
expect_usage "^romulus restore: --device-model $T/no-such-qemu: No such file" \
  restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/key" --xen --device-model "$T/no-such-qemu"
expect_usage "^romulus restore: --device-model qemu: an absolute path is needed" \
  restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/key" --xen --device-model qemu
expect_usage "^romulus restore: --guest-kernel-dir $T/no-such-dir: not a directory" \
  restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/key" --xen --guest-kernel-dir "$T/no-such-dir"
expect_usage "^romulus restore: --max-device-state: must be at least 4 KiB" \
  restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/key" --xen --max-device-state 100
expect_usage "^romulus restore: --vif-script $T/no-such-script: No such file" \
  restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/key" --xen --vif-script "$T/no-such-script"
expect_usage "^romulus restore: --reverse-to: " \
  restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/key" --image "$T/img" --reverse-to nohostport
expect_usage "^romulus restore: --reverse-to: .*needs a host" \
  restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/key" --image "$T/img" --reverse-to ":$dead"
expect_usage "^romulus restore: --reverse-to: .*needs a host" \
  restore --listen "127.0.0.1:$dead" --no-fence --psk-file "$T/key" --xen --reverse-to ":$dead"
# switchover (checked before any socket is contacted)
expect_usage "^romulus switchover: --reverse needs --backup-socket" \
  switchover --socket "$T/p.sock" --reverse "127.0.0.1:$dead"
expect_usage "^romulus switchover: --reverse: 'nohostport' is not HOST:PORT" \
  switchover --socket "$T/p.sock" --backup-socket "$T/b.sock" --reverse nohostport
expect_usage "^romulus switchover: --reverse-timeout needs --reverse" \
  switchover --socket "$T/p.sock" --backup-socket "$T/b.sock" --reverse-timeout 10s
expect_usage "^romulus switchover: --reverse-timeout: " \
  switchover --socket "$T/p.sock" --backup-socket "$T/b.sock" --reverse "127.0.0.1:$dead" --reverse-timeout 10
expect_usage "^romulus switchover: the required argument for option '--reverse' is missing" \
  switchover --socket "$T/p.sock" --backup-socket "$T/b.sock" --reverse
expect_usage "^romulus switchover: --timeout: must be between 1s and 24h" switchover --socket "$T/p.sock" --timeout 0s
expect_usage "^romulus switchover: --reverse-timeout: must be between 1s and 24h" \
  switchover --socket "$T/p.sock" --backup-socket "$T/b.sock" --reverse "127.0.0.1:$dead" --reverse-timeout 0ms
# ctl, drill, bench, demo (flags checked before any socket or file is touched)
expect_usage "^romulus ctl: --timeout: must be between 1ms and 24h" ctl --json --socket "$T/p.sock" --timeout 0s status
expect_usage "^romulus ctl: --timeout: must be between 1ms and 24h" ctl --json --socket "$T/p.sock" --timeout 1500m status
expect_usage "^romulus drill verify: --regions: '-1' is not a whole number from 1 to 4096" \
  drill verify --socket "$T/p.sock" --backup-socket "$T/b.sock" --regions -1
expect_usage "^romulus drill verify: --regions: '-4294967295' is not a whole number" \
  drill verify --socket "$T/p.sock" --backup-socket "$T/b.sock" --regions=-4294967295
expect_usage "^romulus drill verify: --regions: 0 is out of range" \
  drill verify --socket "$T/p.sock" --backup-socket "$T/b.sock" --regions 0
expect_usage "^romulus drill verify: --ahead: 1001 is out of range" \
  drill verify --socket "$T/p.sock" --backup-socket "$T/b.sock" --ahead 1001
expect_usage "^romulus drill: --epoch: '-1' is not a whole number from 3 to 100000" drill --kill-at c --epoch -1
expect_usage "^romulus drill: --epoch: 2 is out of range" drill --kill-at c --epoch 2
expect_usage "^romulus bench e2e: --measure: must be between 100ms and 1h" bench e2e --measure 0s
expect_usage "^romulus bench e2e: --cache-size: must be between 0 and 64G" bench e2e --cache-size 1T
expect_usage "^romulus bench e2e: --intervals: '2m' is not a duration from 1ms to 60s" bench e2e --intervals 25ms,2m
expect_usage "^romulus bench codec: --seed: '-1' is not a whole number" \
  bench codec --generate seed --out-old "$T/g.old" --out-new "$T/g.new" --seed -1
expect_usage "^romulus bench codec: --max-size: must be at least 4 KiB \\(got '0'\\)" \
  bench codec --old "$T/g.old" --new "$T/g.new" --max-size 0
expect_usage "^romulus bench codec: --max-size: must be at least 4 KiB \\(got '4095'\\)" \
  bench codec --old "$T/g.old" --new "$T/g.new" --max-size 4095
expect_usage "^romulus demo: --port: must be between 0 and 65535" demo --port -1
expect_usage "^romulus demo: --port: must be between 0 and 65535" demo --port 70000
# others
expect_usage "^romulus verify: --image PATH is required" verify
expect_usage "^romulus: unknown command 'bogus-subcommand'" bogus-subcommand

[[ -e $T/img ]] && check_fail "a refused restore command created its --image file"
[[ -e $T/g.old || -e $T/g.new ]] && check_fail "a refused bench codec --generate wrote its images"
log "$N bad command lines checked"

# Usage and --help go to stdout, runtime log lines to stderr only.
"$ROMULUS" replicate --help >"$T/help.out" 2>"$T/help.err" || check_fail "replicate --help failed"
grep -q "^Usage: romulus replicate" "$T/help.out" || check_fail "replicate --help printed no usage on stdout"
[[ -s $T/help.err ]] && check_fail "replicate --help wrote to stderr: $(head -c 200 "$T/help.err")"
"$ROMULUS" replicate "${R[@]:1}" --control-socket none >"$T/rt.out" 2>"$T/rt.err" &
rt_pid=$!
E2E_PIDS+=("$rt_pid")
wait_until 10 "replicate logs a warning about the dead backup" grep -q "UNPROTECTED" "$T/rt.err"
kill9 "$rt_pid"
[[ -s $T/rt.out ]] && check_fail "replicate logged to stdout: $(head -c 300 "$T/rt.out")"

# The events file is appended to, never truncated: a restarted backup (same
# --events-json) keeps the lines of the one before it.
ev=$T/events.json
# run_pair N EVENTS: a backup on EVENTS and a primary that stops cleanly after
# 5 epochs; both must exit 0 (the backup logs "stop" and exits).
run_pair() {
  local n=$1 events=$2 port bpid ppid
  port=$(free_port)
  start_backup bpid "$T/pair$n-restore.log" --listen "127.0.0.1:$port" --no-fence --psk-file "$T/key" \
    --image "$T/pair.img" --events-json "$events" --control-socket none
  bg ppid "$T/pair$n-replicate.log" "$ROMULUS" replicate --guest sim:size=16M,workload=hotset \
    --to "127.0.0.1:$port" --psk-file "$T/key" --interval 20ms --epochs 5 --control-socket none
  wait_exit "$ppid" 60
  if assert_exit_not_signal "$EXIT_CODE" "run $n: replicate"; then
    [[ $EXIT_CODE -eq 0 ]] || check_fail "run $n: replicate --epochs 5 exited $EXIT_CODE"
  fi
  wait_exit "$bpid" 30
  if assert_exit_not_signal "$EXIT_CODE" "run $n: restore"; then
    [[ $EXIT_CODE -eq 0 ]] || check_fail "run $n: restore exited $EXIT_CODE after the primary's clean stop"
  fi
  assert_no_crash "$T/pair$n-restore.log" "$T/pair$n-replicate.log"
}
run_pair 1 "$ev"
has_event "$ev" stop || check_fail "run 1: no stop event in $ev"
cp "$ev" "$T/events-run1.json"
run1_lines=$(wc -l <"$T/events-run1.json")
run1_commits=$(jcheck count "$ev" commit)
# As if a backup had been killed in the middle of a line: the next one must
# not be glued to the fragment (that would lose a whole event for readers).
printf '{"event":"comm' >>"$ev"
run_pair 2 "$ev"
assert_no_failover "$ev" "two clean runs"
if ! head -c "$(stat -c %s "$T/events-run1.json")" "$ev" | cmp -s - "$T/events-run1.json"; then
  check_fail "the restarted backup did not keep the first run's events (file truncated or rewritten)"
fi
run2_commits=$(tail -n +$((run1_lines + 1)) "$ev" | grep -c '"event":"commit"')
[[ $run2_commits -ge 5 ]] || check_fail "run 2 appended $run2_commits commit events, expected >= 5"
[[ $(jcheck count "$ev" commit) -eq $((run1_commits + run2_commits)) ]] ||
  check_fail "a commit event after the torn line does not parse: $(sed -n "$((run1_lines + 1)),+1p" "$ev")"
[[ $(grep -c '"event":"stop"' "$ev") -eq 2 ]] || check_fail "expected one stop event per run in $ev"
log "events file: $run1_lines lines from run 1 kept, run 2 appended $run2_commits commits"

# A failing events file (a full disk) is reported once, never stops the backup.
if [[ -w /dev/full ]]; then
  run_pair 3 /dev/full
  n_err=$(grep -c "events-json /dev/full: cannot write an event" "$T/pair3-restore.log")
  [[ $n_err -eq 1 ]] || check_fail "events on a full disk: $n_err error lines, expected exactly one"
  grep -q "events-json /dev/full: cannot write an event: No space left on device" "$T/pair3-restore.log" ||
    check_fail "events on a full disk: the error does not say ENOSPC"
else
  log "skipped the full-disk events case: /dev/full is not writable here"
fi
finish
