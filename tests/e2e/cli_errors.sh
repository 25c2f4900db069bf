#!/usr/bin/env bash
# e2e: bad command lines. Every case must exit 2 promptly with exactly one
# line on stderr ("romulus CMD: ...") that names the problem, print nothing
# on stdout, and not crash. Nothing listens on the --to port used here, so a
# case that is wrongly accepted shows up as a process that keeps running
# (caught by the 10 s bound) or as a different exit status.
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
expect_usage "^romulus restore: --listen ADDR:PORT is required" restore --psk-file "$T/key" --image "$T/img"
expect_usage "^romulus restore: --listen: " restore --listen nohostport --psk-file "$T/key" --image "$T/img"
expect_usage "^romulus restore: key file .*world.key.* chmod 600" \
  restore --listen "127.0.0.1:$dead" --psk-file "$T/world.key" --image "$T/img"
expect_usage "^romulus restore: .*(--psk-file|--insecure)" restore --listen "127.0.0.1:$dead" --image "$T/img"
expect_usage "^romulus restore: --failover-timeout: .*between 20ms and 10m" \
  restore --listen "127.0.0.1:$dead" --psk-file "$T/key" --failover-timeout 5ms --image "$T/img"
expect_usage "^romulus restore: --max-cache-size: " \
  restore --listen "127.0.0.1:$dead" --psk-file "$T/key" --max-cache-size 1X --image "$T/img"
expect_usage "^romulus restore: unrecognised option" restore --listen "127.0.0.1:$dead" --psk-file "$T/key" --frobnicate
expect_usage "^romulus restore: --domain-name, --vif-script and --no-vifs need --xen" \
  restore --listen "127.0.0.1:$dead" --psk-file "$T/key" --image "$T/img" --no-vifs
expect_usage "^romulus restore: --vif-script $T/no-such-script: No such file" \
  restore --listen "127.0.0.1:$dead" --psk-file "$T/key" --xen --vif-script "$T/no-such-script"
expect_usage "^romulus restore: --reverse-to: " \
  restore --listen "127.0.0.1:$dead" --psk-file "$T/key" --image "$T/img" --reverse-to nohostport
expect_usage "^romulus restore: --reverse-to: .*needs a host" \
  restore --listen "127.0.0.1:$dead" --psk-file "$T/key" --image "$T/img" --reverse-to ":$dead"
expect_usage "^romulus restore: --reverse-to: .*needs a host" \
  restore --listen "127.0.0.1:$dead" --psk-file "$T/key" --xen --reverse-to ":$dead"
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
# others
expect_usage "^romulus verify: --image PATH is required" verify
expect_usage "^romulus: unknown command 'bogus-subcommand'" bogus-subcommand

[[ -e $T/img ]] && check_fail "a refused restore command created its --image file"
log "$N bad command lines checked"
finish
