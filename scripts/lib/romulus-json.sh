# shellcheck shell=sh
# scripts/lib/romulus-json.sh — reading Romulus' JSON from shell scripts: the
# --events-json lines (docs/EVENTS.md), the --stats-json lines (docs/STATS.md)
# and `romulus ctl --json` answers (docs/CONTROL.md).
#
# POSIX sh + POSIX awk, nothing else: the same file runs in the Xen lab's dom0
# (busybox ash and awk; installed as /lab/romulus-json.sh, sourced by
# /lab/dom0-lib.sh) and on the host for tests/e2e (bash, mawk or gawk; sourced
# by tests/e2e/lib/common.sh). jq is not used: the host's scripts/setup does
# not install it, and one parser for both places keeps them reading alike.
#
#   . scripts/lib/romulus-json.sh
#
# Values
#   rj_get JSON PATH            the value at PATH in one JSON text: a member
#                               name, nested with dots ("last.epoch"), array
#                               elements by index ("commands.0"); "" = all.
#                               Strings come out unescaped, numbers/true/false/
#                               null as written, objects/arrays as their text.
#                               Status 1 when JSON does not parse or has no PATH.
# Lines of a JSON-lines file (a line that does not parse, e.g. torn by a
# crash, is skipped, as docs/EVENTS.md tells readers to do)
#   rj_select FILE PATH VALUE [AFTER_SEQ]
#                               the lines whose PATH is VALUE (and, with
#                               AFTER_SEQ, whose "seq" is above it), in order
#   rj_count FILE PATH VALUE [AFTER_SEQ]     how many (0 when none, no file)
#   rj_first FILE PATH VALUE [AFTER_SEQ]     the first such line (status 1: none)
#   rj_last  FILE PATH VALUE [AFTER_SEQ]     the last such line (status 1: none)
#   rj_max FILE PATH [SELECT_PATH VALUE]     the highest number at PATH (of the
#                               lines selected), "" and status 1 when none
#   rj_csv FILE SELECT_PATH VALUE PATH...    of each line whose SELECT_PATH is
#                               VALUE (every line that parses when SELECT_PATH is
#                               ""), the values at PATH... joined by commas, ""
#                               for a missing one (one pass: for hundreds of lines)
# Events (docs/EVENTS.md)
#   rj_events FILE TYPE [AFTER_SEQ]         = rj_select FILE event TYPE ...
#   rj_event_count / rj_first_event / rj_last_event FILE TYPE [AFTER_SEQ]
#   rj_last_seq FILE            the highest seq in FILE (0 when none)
#   rj_wait_event FILE TYPE SECONDS [AFTER_SEQ]
#                               wait until FILE holds such an event; prints the
#                               first one; status 1 after SECONDS without
#   rj_evidence FILE [N]        the last N (20) events, one short line each
#                               ("seq 12 commit epoch=5 digest=…"), for failures
# Control socket (romulus ctl --json; the binary is $RJ_ROMULUS, default romulus)
#   rj_ctl SOCKET WORD...       one request; the answer line is printed and kept
#                               in RJ_REPLY, ctl's stderr in RJ_ERROR; status is
#                               ctl's: 0 ok, 1 refused/failed, 2 usage error
#   rj_status SOCKET PATH       a member of `ctl status` (status 1: no answer/member)
#   rj_wait_ctl SOCKET SECONDS  wait until the daemon answers `status` (its
#                               socket exists once it has started); status 1 if not
#   rj_ctl_wait SOCKET EVENT SECONDS [AFTER_SEQ]
#                               `ctl wait EVENT after SEQ within SECONDSs`: blocks
#                               in the daemon; prints the event object; status 1
#                               when none came within SECONDS
# Stats lines (--stats-json: one object per epoch)
#   rj_last_acked FILE          highest acked epoch (0 when none)

# The parser: one awk program, the mode chosen by -v m=...
#   m=get    first input line is a JSON text, print the value at p
#   m=sel    print input lines whose p equals v (and seq > a when a != "")
#   m=cnt    count them;  m=max: highest number at p among lines where sp == sv
#   m=csv    of lines where sp == sv, the values at the paths in f, comma-joined
#   m=evi    short rendering of each event line
_RJ_AWK='
function ws() { while (P <= L && index(" \t\r\n", substr(S, P, 1))) P++ }
function hexv(h,   i, c, n) {
  n = 0
  for (i = 1; i <= 4; i++) {
    c = index("0123456789abcdef", tolower(substr(h, i, 1)))
    if (!c) return -1
    n = n * 16 + c - 1
  }
  return n
}
# a string at P (the opening quote): its unescaped text in TOK
function str(   out, c, e, h, n) {
  P++; out = ""
  for (;;) {
    if (match(substr(S, P), /^[^"\\]+/)) { out = out substr(S, P, RLENGTH); P += RLENGTH }
    c = substr(S, P, 1)
    if (c == "\"") { P++; TOK = out; return 1 }
    if (c != "\\") return 0
    e = substr(S, P + 1, 1); P += 2
    if (e == "\"" || e == "\\" || e == "/") out = out e
    else if (e == "n") out = out "\n"
    else if (e == "t") out = out "\t"
    else if (e == "r") out = out "\r"
    else if (e == "b") out = out "\b"
    else if (e == "f") out = out "\f"
    else if (e == "u") {
      h = substr(S, P, 4); n = hexv(h)
      if (n < 0) return 0
      P += 4
      # ASCII as itself; anything else kept escaped (no byte-level UTF-8 in awk)
      if (n >= 32 && n < 127) out = out sprintf("%c", n); else out = out "\\u" h
    } else return 0
  }
}
# the value at P, stored (with everything under it) in V[path]
function val(path,   c, st, k, n) {
  ws(); st = P; c = substr(S, P, 1)
  if (c == "{" || c == "[") {
    P++; ws(); n = 0
    if (substr(S, P, 1) == (c == "{" ? "}" : "]")) { P++; V[path] = substr(S, st, P - st); return 1 }
    for (;;) {
      ws()
      if (c == "{") {
        if (substr(S, P, 1) != "\"" || !str()) return 0
        k = TOK; ws()
        if (substr(S, P, 1) != ":") return 0
        P++
      } else k = n++
      if (!val(path == "" ? k : path "." k)) return 0
      ws(); k = substr(S, P, 1); P++
      if (k == (c == "{" ? "}" : "]")) break
      if (k != ",") return 0
    }
    V[path] = substr(S, st, P - st); return 1
  }
  if (c == "\"") { if (!str()) return 0; V[path] = TOK; return 1 }
  if (match(substr(S, P), /^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?/) ||
      match(substr(S, P), /^(true|false|null)/)) {
    V[path] = substr(S, P, RLENGTH); P += RLENGTH; return 1
  }
  return 0
}
# parse S as one JSON text into V; 1 when it is one
function parse(line) {
  split("", V); S = line; L = length(S); P = 1
  if (!val("")) return 0
  ws(); return P > L
}
function num(x) { return x ~ /^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/ }
m == "get" { if (NR == 1 && parse($0) && (p in V)) { print V[p]; found = 1 } exit }
m == "sel" || m == "cnt" {
  if (!parse($0) || !(p in V) || V[p] != v) next
  if (a != "" && !(("seq" in V) && V["seq"] + 0 > a + 0)) next
  n++; if (m == "sel") print $0
}
m == "max" {
  if (!parse($0) || !(p in V) || !num(V[p])) next
  if (sp != "" && (!(sp in V) || V[sp] != sv)) next
  if (!found || V[p] + 0 > best + 0) best = V[p]
  found = 1
}
m == "csv" {
  if (!parse($0) || (sp != "" && (!(sp in V) || V[sp] != sv))) next
  nf = split(f, F, " "); out = ""
  for (i = 1; i <= nf; i++) out = out (i > 1 ? "," : "") ((F[i] in V) ? V[F[i]] : "")
  print out
}
m == "evi" {
  if (!parse($0) || !("event" in V)) next
  out = "seq " ("seq" in V ? V["seq"] : "?") " " V["event"]
  # the event s own members, in the order written (seq, time_ms, role left out)
  S2 = $0; rest = ""
  while (match(S2, /"[A-Za-z_][A-Za-z0-9_]*":/)) {
    k = substr(S2, RSTART + 1, RLENGTH - 3); S2 = substr(S2, RSTART + RLENGTH)
    if (k == "event" || k == "seq" || k == "time_ms" || k == "role" || !(k in V) || (k in shown)) continue
    shown[k] = 1; x = V[k]; if (length(x) > 100) x = substr(x, 1, 100) "..."
    rest = rest " " k "=" x
  }
  split("", shown)
  print out rest
}
END {
  if (m == "cnt") print n + 0
  if (m == "max" && found) print best
  if (m == "get" || m == "max") exit !found
}'

rj_get() {
  printf '%s\n' "$1" | awk -v m=get -v p="$2" "$_RJ_AWK"
}

# A cheap pre-filter for the file readers: a line can only match when it holds
# VALUE's text (exact for values made of plain characters; others go to awk whole).
_rj_lines() {  # _rj_lines FILE VALUE
  [ -f "$1" ] || return 0
  case $2 in
    *[!A-Za-z0-9_.:+-]*|'') cat "$1" ;;
    *) grep -F -- "$2" "$1" ;;
  esac
}

rj_select() { _rj_lines "$1" "$3" | awk -v m=sel -v p="$2" -v v="$3" -v a="${4:-}" "$_RJ_AWK"; }
rj_count() { _rj_lines "$1" "$3" | awk -v m=cnt -v p="$2" -v v="$3" -v a="${4:-}" "$_RJ_AWK"; }
rj_first() {
  _rj_f=$(rj_select "$@" | head -n 1)
  [ -n "$_rj_f" ] || return 1
  printf '%s\n' "$_rj_f"
}
rj_last() {
  _rj_f=$(rj_select "$@" | tail -n 1)
  [ -n "$_rj_f" ] || return 1
  printf '%s\n' "$_rj_f"
}
rj_max() {
  if [ -n "${3:-}" ]; then _rj_lines "$1" "${4:-}"; else _rj_lines "$1" ""; fi |
    awk -v m=max -v p="$2" -v sp="${3:-}" -v sv="${4:-}" "$_RJ_AWK"
}

rj_csv() {
  _rj_file=$1; _rj_sp=$2; _rj_sv=$3; shift 3
  _rj_lines "$_rj_file" "$_rj_sv" | awk -v m=csv -v sp="$_rj_sp" -v sv="$_rj_sv" -v f="$*" "$_RJ_AWK"
}

rj_events() { rj_select "$1" event "$2" "${3:-}"; }
rj_event_count() { rj_count "$1" event "$2" "${3:-}"; }
rj_first_event() { rj_first "$1" event "$2" "${3:-}"; }
rj_last_event() { rj_last "$1" event "$2" "${3:-}"; }
rj_last_seq() { _rj_s=$(rj_max "$1" seq) || _rj_s=0; echo "$_rj_s"; }
rj_last_acked() { _rj_s=$(rj_max "$1" epoch acked true) || _rj_s=0; echo "$_rj_s"; }

# rj_wait_event FILE TYPE SECONDS [AFTER_SEQ]: polls every 0.2 s (the file may
# not exist yet); the deadline is counted in polls, so a slow host waits longer
# rather than shorter.
rj_wait_event() {
  _rj_n=$(( $3 * 5 ))
  until rj_first_event "$1" "$2" "${4:-}"; do
    _rj_n=$((_rj_n - 1))
    [ "$_rj_n" -ge 0 ] || return 1
    sleep 0.2
  done
}

rj_evidence() {
  [ -f "$1" ] || { echo "(no events file $1)"; return 0; }
  tail -n "${2:-20}" "$1" | awk -v m=evi "$_RJ_AWK"
}

RJ_REPLY=""; RJ_ERROR=""
rj_ctl() {
  _rj_sock=$1; shift
  _rj_err=${TMPDIR:-/tmp}/rj-ctl.$$.err
  RJ_REPLY=$("${RJ_ROMULUS:-romulus}" ctl --json --socket "$_rj_sock" "$@" 2>"$_rj_err")
  _rj_rc=$?
  RJ_ERROR=$(cat "$_rj_err" 2>/dev/null); rm -f "$_rj_err"
  printf '%s\n' "$RJ_REPLY"
  return $_rj_rc
}

rj_status() {
  rj_ctl "$1" status >/dev/null || return 1
  rj_get "$RJ_REPLY" "$2"
}

rj_wait_ctl() {
  _rj_n=$(( $2 * 5 ))
  until rj_ctl "$1" status >/dev/null; do
    _rj_n=$((_rj_n - 1))
    [ "$_rj_n" -ge 0 ] || return 1
    sleep 0.2
  done
}

rj_ctl_wait() {
  rj_ctl "$1" wait "$2" after "${4:-0}" within "${3}s" >/dev/null || return 1
  rj_get "$RJ_REPLY" event
}
