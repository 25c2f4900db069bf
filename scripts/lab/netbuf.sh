# shellcheck shell=bash
# scripts/lab/netbuf.sh — helpers for scripts/netbuf-lab on top of lib.sh.
#   netbuf_find_lab_bin [LAB_BIN] [BUILD_DIR] [ROMULUS]  -> prints the path of an up-to-date
#       netbuf_lab_test: LAB_BIN if given; else built (target netbuf_lab_test only) in
#       BUILD_DIR, in the build tree ROMULUS lives in, in build/release, or in a build tree
#       of its own (build/netbuf-lab).
#   netbuf_stage_iproute2 STAGE  -> iproute2's ip and tc (not busybox's: busybox ip has no
#       `netns`, busybox has no tc) with their library closure.

netbuf_find_lab_bin() {
  local bin=${1:-} build=${2:-} romulus=${3:-} d cands=()
  if [ -n "$bin" ]; then
    [ -x "$bin" ] || { lab_log "--lab-bin $bin is not an executable"; return 1; }
    readlink -f "$bin"; return 0
  fi
  [ -n "$build" ] && cands+=("$build")
  if [ -n "$romulus" ]; then
    d=$(dirname "$romulus")
    while [ "$d" != / ] && [ ! -e "$d/CMakeCache.txt" ]; do d=$(dirname "$d"); done
    [ -e "$d/CMakeCache.txt" ] && cands+=("$d")
  fi
  cands+=("$LAB_REPO/build/release" "$LAB_REPO/build/netbuf-lab")
  for d in "${cands[@]}"; do
    [ -e "$d/CMakeCache.txt" ] || continue
    # Only when this tree found libnl (the target exists only then).
    if lab_quiet cmake --build "$d" -j2 --target netbuf_lab_test && [ -x "$d/netbuf/netbuf_lab_test" ]; then
      echo "$d/netbuf/netbuf_lab_test"; return 0
    fi
  done
  d=$LAB_REPO/build/netbuf-lab
  lab_log "configuring $d for netbuf_lab_test"
  lab_quiet cmake -S "$LAB_REPO" -B "$d" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo || return 1
  lab_quiet cmake --build "$d" -j2 --target netbuf_lab_test || return 1
  echo "$d/netbuf/netbuf_lab_test"
}

netbuf_stage_iproute2() {
  local s=$1 tool src
  for tool in ip tc; do
    src=$(command -v "$tool" || ls /usr/sbin/$tool /sbin/$tool 2>/dev/null | head -n1)
    [ -n "$src" ] || { lab_log "iproute2's $tool not found on the host (apt-get install iproute2)"; return 1; }
    src=$(readlink -f "$src")
    # Remove busybox's applet symlinks first: copying onto them would overwrite busybox.
    rm -f "$s/usr/bin/$tool" "$s/usr/sbin/$tool"
    lab_stage_add_bin "$s" "$src" "/usr/bin/$tool" || return 1
  done
  [ -d /etc/iproute2 ] && cp -a /etc/iproute2 "$s/etc/" 2>/dev/null
  return 0
}
