# shellcheck shell=bash
# scripts/lab/lib.sh — shared helpers for the QEMU labs (the Xen lab, the plain-Linux
# netbuf lab). Source it from bash:   . "$repo/scripts/lab/lib.sh"
#
# What it gives you (all functions prefixed lab_):
#   packages   lab_apt_ready, lab_pkg_version PKG[=VER], lab_pkg_root NAME PKG[=VER]...
#              -> downloads .debs with `apt-get download` into $LAB_CACHE/debs and unpacks
#                 them with `dpkg-deb -x` into a cached root keyed by the exact versions.
#                 Nothing is ever installed on the host (its /boot stays untouched).
#   kernel     lab_kernel [PKG]  -> sets LAB_KVER, LAB_KROOT, LAB_VMLINUZ, LAB_MODDIR
#                 (the Debian bookworm kernel, default: what linux-image-amd64 depends on)
#   initramfs  lab_stage_new DIR; lab_stage_add_file/_bin/_tree/_modules/_script; lab_stage_pack
#                 busybox-static based, each binary's ldd closure + libgcc_s.so.1 added,
#                 var/run -> ../run, ld.so.cache built for the stage.
#   qemu       lab_qemu_start LOG ARGS...; lab_qemu_wait TIMEOUT [DONE_REGEX]; lab_qemu_kill
#                 TCG (-accel tcg,thread=multi -cpu max,-smap,-smep), isa-debug-exit at 0xf4,
#                 serial to LOG, hard timeout, QEMU always killed by PID (EXIT/INT/TERM trap).
#   markers    lab_marker LOG REGEX; lab_wait_marker LOG REGEX TIMEOUT; lab_marker_value LOG KEY
#   misc       lab_log, lab_die, lab_on_exit CMD, lab_need_host_pkgs PKG...
#
# Environment:
#   ROMULUS_LAB_CACHE  cache directory (default: <repo>/build/lab-cache, gitignored)
#   LAB_QEMU           host (default) | trixie (Debian 13's QEMU 10, trixie.sh) | PATH: the emulator
#   LAB_QEMU_CPU, LAB_QEMU_ACCEL  the -cpu model and -accel (see LAB_QEMU_BASE)
#   LAB_VERBOSE=1      echo commands' noisy output instead of hiding it
#
# Conventions inside a guest initramfs built here:
#   /bin/busybox + applet symlinks, /init is yours (lab_stage_add_script STAGE /init FILE),
#   /bin/lab-exit [CODE]  powers QEMU off through isa-debug-exit: QEMU exits with
#                         (CODE<<1)|1, so `lab-exit 1` -> 3 (success by convention),
#                         `lab-exit 2` -> 5 (failure).
#   /etc/lab-modules      list of .ko paths (dependency order) added by lab_stage_add_modules;
#                         /bin/lab-load-modules insmods them in order.

if [ -n "${_LAB_LIB_SOURCED:-}" ]; then return 0; fi
_LAB_LIB_SOURCED=1

LAB_REPO=${LAB_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
LAB_CACHE=${ROMULUS_LAB_CACHE:-$LAB_REPO/build/lab-cache}
LAB_ARCH=${LAB_ARCH:-amd64}
LAB_MULTIARCH=${LAB_MULTIARCH:-x86_64-linux-gnu}
LAB_START_TS=${LAB_START_TS:-$(date +%s)}
LAB_QEMU_PID=""
_LAB_EXIT_HOOKS=()

# ---------------------------------------------------------------- logging / exit hooks

lab_log() { printf '[%4ss] %s\n' "$(( $(date +%s) - LAB_START_TS ))" "$*" >&2; }
lab_die() { lab_log "ERROR: $*"; exit 1; }

# Run a command quietly; on failure show its output and die.
lab_quiet() {
  local out rc
  if [ "${LAB_VERBOSE:-0}" = 1 ]; then "$@" >&2; return; fi
  out=$(mktemp)
  "$@" >"$out" 2>&1; rc=$?
  if [ $rc -ne 0 ]; then
    lab_log "command failed ($rc): $*"; tail -n 40 "$out" >&2
  fi
  rm -f "$out"
  return $rc
}

# Register a command to run at exit (LIFO). QEMU is always killed first.
lab_on_exit() { _LAB_EXIT_HOOKS+=("$*"); }

_lab_exit_trap() {
  local rc=$?
  lab_qemu_kill
  local i
  for (( i=${#_LAB_EXIT_HOOKS[@]}-1; i>=0; i-- )); do eval "${_LAB_EXIT_HOOKS[$i]}" || true; done
  _LAB_EXIT_HOOKS=()
  return $rc
}
trap _lab_exit_trap EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- host packages / apt

_lab_sudo() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Make sure apt's lists exist (apt-get update once per day at most, by a stamp in the cache).
lab_apt_ready() {
  [ "${_LAB_APT_OK:-0}" = 1 ] && [ "${_LAB_APT_FORCE:-0}" != 1 ] && return 0
  mkdir -p "$LAB_CACHE"
  local stamp=$LAB_CACHE/.apt-updated
  if [ "${_LAB_APT_FORCE:-0}" = 1 ] || [ ! -e "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440 2>/dev/null)" ] \
     || ! apt-cache policy busybox-static 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null; then
    lab_log "apt-get update"
    _lab_sudo apt-get update -qq >/dev/null 2>&1 || lab_log "warning: apt-get update failed"
    touch "$stamp"
  fi
  _LAB_APT_OK=1
}

# Force one apt-get update (e.g. after adding a sources entry).
lab_apt_update() { _LAB_APT_FORCE=1 lab_apt_ready; }

# Install host tools by package name if missing (qemu, busybox-static, cpio, ...).
lab_need_host_pkgs() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  lab_apt_ready
  lab_log "installing host packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive _lab_sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null 2>&1 || lab_die "apt-get install ${missing[*]} failed"
}

# lab_pkg_versions SPEC... -> prints "pkg=version" per SPEC (PKG or PKG=VER), in order.
# Unversioned specs get apt's candidate, resolved in ONE apt-cache call (apt-cache is slow on
# a loaded machine). Versioned specs are passed through (apt-get download checks them).
lab_pkg_versions() {
  local spec plain=() out
  for spec in "$@"; do [ "$spec" = "${spec%%=*}" ] && plain+=("$spec"); done
  out=""
  if [ ${#plain[@]} -gt 0 ]; then
    out=$(apt-cache policy "${plain[@]}" 2>/dev/null | awk '
      /^[^ ].*:$/ { pkg = substr($0, 1, length($0) - 1) }
      /^  Candidate:/ { if ($2 != "(none)") print pkg "=" $2 }')
  fi
  local pkg ver
  for spec in "$@"; do
    pkg=${spec%%=*}
    if [ "$spec" != "$pkg" ]; then echo "$spec"; continue; fi
    ver=$(awk -F= -v p="$pkg" '$1 == p { print $2; exit }' <<<"$out")
    [ -n "$ver" ] || { lab_log "no candidate version of '$pkg' known to apt"; return 1; }
    echo "$pkg=$ver"
  done
}

# lab_pkg_version PKG[=VER] -> prints the version apt would download (candidate, or VER if
# that exact version is known to apt). Status 1 if none.
lab_pkg_version() {
  local spec=$1 pkg=${1%%=*} ver
  if [ "$spec" != "$pkg" ]; then
    ver=${spec#*=}
    apt-cache madison "$pkg" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}' | grep -xF "$ver" >/dev/null \
      && { echo "$ver"; return 0; }
    return 1
  fi
  spec=$(lab_pkg_versions "$pkg" 2>/dev/null) || return 1
  echo "${spec#*=}"
}

_lab_deb_file() {  # _lab_deb_file DIR PKG VER -> existing .deb path or nothing
  local fv=${3//:/%3a}
  ls "$1/${2}_${fv}_"*.deb 2>/dev/null | head -n1 || true
}

# lab_debs_get PKG=VER... -> downloads into $LAB_CACHE/debs (skips files present), prints
# the .deb paths, one per line, in argument order. Exact versions required (lab_pkg_versions).
lab_debs_get() {
  local d=$LAB_CACHE/debs spec pkg ver f want=() files=()
  mkdir -p "$d"; chmod 755 "$d" 2>/dev/null || true
  for spec in "$@"; do
    pkg=${spec%%=*}; ver=${spec#*=}
    [ -n "$(_lab_deb_file "$d" "$pkg" "$ver")" ] || want+=("$spec")
  done
  if [ ${#want[@]} -gt 0 ]; then
    lab_log "apt-get download ${want[*]}"
    ( cd "$d" && apt-get download -qq "${want[@]}" ) >/dev/null 2>"$d/.download.err" \
      || { grep -v '^W: Download is performed unsandboxed' "$d/.download.err" >&2; return 1; }
  fi
  for spec in "$@"; do
    pkg=${spec%%=*}; ver=${spec#*=}
    f=$(_lab_deb_file "$d" "$pkg" "$ver")
    [ -n "$f" ] || { lab_log "download of $spec produced no file"; return 1; }
    files+=("$f")
  done
  printf '%s\n' "${files[@]}"
}

# lab_pkg_root NAME PKG[=VER]...  -> prints a directory holding all the packages unpacked
# together (dpkg-deb -x). Cached under $LAB_CACHE/roots/NAME-<hash of pkg=version list>.
lab_pkg_root() {
  local name=$1; shift
  local keys key root tmp f
  lab_apt_ready
  keys=$(lab_pkg_versions "$@") || return 1
  key=$(sort <<<"$keys" | sha256sum | cut -c1-16)
  root=$LAB_CACHE/roots/$name-$key
  if [ -e "$root/.complete" ]; then echo "$root"; return 0; fi
  local debs
  # shellcheck disable=SC2086
  debs=$(lab_debs_get $keys) || return 1
  tmp=$root.tmp.$$
  rm -rf "$tmp"; mkdir -p "$tmp"
  while IFS= read -r f; do dpkg-deb -x "$f" "$tmp" || { rm -rf "$tmp"; return 1; }; done <<<"$debs"
  printf '%s\n' "$keys" >"$tmp/.packages"
  touch "$tmp/.complete"
  rm -rf "$root"; mv "$tmp" "$root"
  echo "$root"
}

# ---------------------------------------------------------------- kernel

# lab_kernel [PKG[=VER]] : fetch + unpack the Debian kernel (default: the image package that
# the linux-image-amd64 metapackage depends on), run depmod on the unpacked tree.
# Sets LAB_KVER, LAB_KROOT, LAB_VMLINUZ, LAB_MODDIR.
lab_kernel() {
  local spec=${1:-}
  lab_apt_ready
  if [ -z "$spec" ]; then
    spec=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [ -n "$spec" ] || lab_die "cannot resolve linux-image-amd64 to a kernel package"
  fi
  LAB_KROOT=$(lab_pkg_root kernel "$spec") || lab_die "cannot fetch kernel $spec"
  LAB_VMLINUZ=$(ls "$LAB_KROOT"/boot/vmlinuz-* 2>/dev/null | head -n1)
  [ -n "$LAB_VMLINUZ" ] || lab_die "no vmlinuz in $spec"
  LAB_KVER=${LAB_VMLINUZ##*/vmlinuz-}
  LAB_MODDIR=$LAB_KROOT/lib/modules/$LAB_KVER
  if [ ! -s "$LAB_MODDIR/modules.dep" ]; then
    depmod -b "$LAB_KROOT" "$LAB_KVER" || lab_die "depmod failed on $LAB_KROOT"
  fi
  export LAB_KVER LAB_KROOT LAB_VMLINUZ LAB_MODDIR
}

# lab_module_files MODULE... -> prints the .ko files (absolute, dependency order, no
# duplicates) needed to load the modules; built-in modules print nothing. Needs lab_kernel.
lab_module_files() {
  local m out all=""
  for m in "$@"; do
    out=$(modprobe -d "$LAB_KROOT" -S "$LAB_KVER" --show-depends "$m" 2>&1) \
      || { lab_log "module $m not found in $LAB_KVER: $out"; return 1; }
    all+=$(awk '$1=="insmod" {print $2}' <<<"$out")$'\n'
  done
  awk 'NF && !seen[$0]++' <<<"$all"
}

# ---------------------------------------------------------------- initramfs staging

# lab_stage_new DIR : fresh busybox-static skeleton.
lab_stage_new() {
  local s=$1 bb
  bb=$(command -v busybox || true)
  [ -n "$bb" ] && file -L "$bb" 2>/dev/null | grep 'statically linked' >/dev/null \
    || { lab_need_host_pkgs busybox-static; bb=/bin/busybox; }
  rm -rf "$s"
  mkdir -p "$s"/{usr/bin,usr/sbin,usr/lib/$LAB_MULTIARCH,usr/lib64,etc,proc,sys,dev,run,tmp,root,mnt,var/log,var/lib}
  ln -s usr/bin "$s/bin"; ln -s usr/sbin "$s/sbin"; ln -s usr/lib "$s/lib"; ln -s usr/lib64 "$s/lib64"
  ln -s ../run "$s/var/run"          # LAB-NOTES pitfall 5: a loop here breaks xenstored
  ln -s ../tmp "$s/var/tmp"
  chmod 1777 "$s/tmp"
  cp "$bb" "$s/usr/bin/busybox"
  local a
  for a in $("$bb" --list); do
    [ "$a" = busybox ] && continue
    [ -e "$s/usr/bin/$a" ] || ln -s busybox "$s/usr/bin/$a"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$s/etc/passwd"
  printf 'root:x:0:\n' >"$s/etc/group"
  printf '127.0.0.1 localhost\n::1 localhost\n' >"$s/etc/hosts"
  printf 'hosts: files\n' >"$s/etc/nsswitch.conf"
  : >"$s/etc/lab-modules"
  cat >"$s/usr/bin/lab-exit" <<'EOF'
#!/bin/sh
# Power QEMU off through isa-debug-exit (port 0xf4): QEMU exits with (CODE<<1)|1.
code=${1:-1}
sync
printf "\\$(printf %03o "$code")" | dd of=/dev/port bs=1 seek=244 count=1 conv=notrunc 2>/dev/null
sleep 5
echo "lab-exit: isa-debug-exit did not stop QEMU" >&2
poweroff -f
EOF
  cat >"$s/usr/bin/lab-load-modules" <<'EOF'
#!/bin/sh
# insmod every module listed in /etc/lab-modules, in order (already-loaded ones are fine).
rc=0
while read -r ko args; do
  [ -n "$ko" ] || continue
  name=$(basename "$ko" .ko); name=$(echo "$name" | tr - _)
  grep -q "^$name " /proc/modules 2>/dev/null && continue
  insmod "$ko" $args || { echo "lab-load-modules: insmod $ko failed" >&2; rc=1; }
done </etc/lab-modules
exit $rc
EOF
  chmod 755 "$s/usr/bin/lab-exit" "$s/usr/bin/lab-load-modules"
}

# lab_stage_add_file STAGE SRC [DEST] : copy a file (symlinks dereferenced) to DEST
# (default: same absolute path as SRC). Parents created.
lab_stage_add_file() {
  local s=$1 src=$2 dst=${3:-$2}
  [ -e "$src" ] || { lab_log "lab_stage_add_file: missing $src"; return 1; }
  mkdir -p "$s/$(dirname "$dst")"
  cp -L --preserve=mode "$src" "$s/$dst"
}

# lab_stage_add_libs STAGE FILE [LIBROOT...] : add FILE's shared-library closure (ldd),
# the ELF interpreter and libgcc_s.so.1 (glibc dlopens it for pthread_cancel; ldd does not
# list it — LAB-NOTES pitfall 4). A library found under one of the LIBROOTs (unpacked
# packages) is put at its path relative to that root.
lab_stage_add_libs() {
  local s=$1 f=$2; shift 2
  local roots=("$@") llp="" r lib rel
  file -L "$f" 2>/dev/null | grep 'dynamically linked' >/dev/null || return 0
  for r in "${roots[@]}"; do
    llp+="${llp:+:}$r/usr/lib/$LAB_MULTIARCH:$r/lib/$LAB_MULTIARCH:$r/usr/lib"
  done
  local out
  out=$(LD_LIBRARY_PATH="$llp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$f" 2>&1) \
    || { lab_log "ldd $f failed: $out"; return 1; }
  if grep -q 'not found' <<<"$out"; then lab_log "ldd $f: $(grep 'not found' <<<"$out" | tr '\n' ' ')"; return 1; fi
  local libs
  libs=$(awk '/=>/ && $3 ~ /^\// {print $3} !/=>/ && $1 ~ /^\// {print $1}' <<<"$out")
  local gcc_s
  gcc_s=$(ls /lib/$LAB_MULTIARCH/libgcc_s.so.1 /usr/lib/$LAB_MULTIARCH/libgcc_s.so.1 2>/dev/null | head -n1)
  [ -n "$gcc_s" ] || lab_die "libgcc_s.so.1 not found on the host (install libgcc-s1)"
  for lib in $libs $gcc_s; do
    rel=$lib
    for r in "${roots[@]}"; do
      case $lib in "$r"/*) rel=${lib#"$r"};; esac
    done
    [ -e "$s/$rel" ] || lab_stage_add_file "$s" "$lib" "$rel" || return 1
  done
}

# lab_stage_add_bin STAGE SRC [DEST] [LIBROOT...] : add an executable and its library closure.
lab_stage_add_bin() {
  local s=$1 src=$2 dst=${3:-$2}; shift 3 2>/dev/null || shift $#
  lab_stage_add_file "$s" "$src" "$dst" || return 1
  chmod 755 "$s/$dst"
  lab_stage_add_libs "$s" "$src" "$@"
}

# lab_stage_add_tree STAGE ROOT PATH... : copy PATHs (files or directories, relative to ROOT,
# symlinks kept as symlinks) into the stage at the same relative paths; every ELF file
# copied also gets its library closure (libraries from ROOT preferred).
lab_stage_add_tree() {
  local s=$1 root=$2; shift 2
  local p f
  for p in "$@"; do
    p=${p#/}
    [ -e "$root/$p" ] || [ -L "$root/$p" ] || { lab_log "lab_stage_add_tree: missing $root/$p"; return 1; }
    ( cd "$root" && cp -a --parents "$p" "$s/" ) || return 1
    while IFS= read -r f; do
      if [ "$(head -c4 "$f" 2>/dev/null | tr -d '\177')" = ELF ]; then lab_stage_add_libs "$s" "$f" "$root" || return 1; fi
    done < <(find "$root/$p" -type f 2>/dev/null)
  done
}

# lab_stage_add_modules STAGE MODULE... : copy the modules and their dependencies from the
# kernel set by lab_kernel, append them (in load order) to /etc/lab-modules.
# .ko.xz/.ko.zst are decompressed (busybox insmod loads plain .ko).
lab_stage_add_modules() {
  local s=$1; shift
  local files f rel dst
  files=$(lab_module_files "$@") || return 1
  while IFS= read -r f; do
    [ -n "$f" ] || continue
    rel=${f#"$LAB_KROOT"}
    dst=${rel%.xz}; dst=${dst%.zst}
    grep -qxF "$dst" "$s/etc/lab-modules" && continue
    mkdir -p "$s/$(dirname "$dst")"
    case $f in
      *.xz) xz -dc "$f" >"$s/$dst" ;;
      *.zst) zstd -qdc "$f" >"$s/$dst" ;;
      *) cp "$f" "$s/$dst" ;;
    esac
    echo "$dst" >>"$s/etc/lab-modules"
  done <<<"$files"
}

# lab_stage_add_script STAGE DEST FILE|- : install a script (FILE or stdin) executable at DEST.
lab_stage_add_script() {
  local s=$1 dst=$2 src=${3:--}
  mkdir -p "$s/$(dirname "$dst")"
  if [ "$src" = - ]; then cat >"$s/$dst"; else cp "$src" "$s/$dst"; fi
  chmod 755 "$s/$dst"
}

# lab_stage_pack STAGE OUT : newc cpio, gzip -1 (fast; the kernel unpacks it fine).
lab_stage_pack() {
  local s=$1 out=$2
  [ -x "$s/init" ] || lab_log "warning: $s has no executable /init"
  ldconfig -r "$s" 2>/dev/null || true
  mkdir -p "$(dirname "$out")"
  ( cd "$s" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet ) | gzip -1 >"$out.tmp" \
    && mv "$out.tmp" "$out"
}

# ---------------------------------------------------------------- QEMU

# QEMU options every lab uses (TCG: /dev/kvm on these machines is not hardware KVM;
# -smap/-smep: dom0 crashes in create_bounce_frame otherwise — LAB-NOTES pitfalls 2, 3).
# LAB_QEMU_CPU overrides the -cpu model, LAB_QEMU_ACCEL the accelerator (tcg,thread=single:
# one host thread for every vCPU, for experiments with TCG's multi-threaded artefacts).
LAB_QEMU_BASE=(-accel "${LAB_QEMU_ACCEL:-tcg,thread=multi}" -cpu "${LAB_QEMU_CPU:-max,-smap,-smep}" -display none -monitor none
  -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04)

# LAB_QEMU picks the emulator: "host" (default: the host's qemu-system-x86_64, Debian 12's
# QEMU 7.2), "trixie" (Debian 13's QEMU 10.0, fetched by name through the trixie root and run
# with its ld.so: trixie.sh lab_trixie_qemu; needs root), or the path of a qemu-system-x86_64.
# lab_qemu_resolve sets LAB_QEMU_CMD (the command) and LAB_QEMU_VERSION (its --version line);
# lab_qemu_start calls it, a script may call it earlier to fail before its other work.
LAB_QEMU_CMD=()
lab_qemu_resolve() {
  [ ${#LAB_QEMU_CMD[@]} -eq 0 ] || return 0
  case ${LAB_QEMU:-host} in
    host)
      command -v qemu-system-x86_64 >/dev/null || lab_need_host_pkgs qemu-system-x86
      LAB_QEMU_CMD=(qemu-system-x86_64) ;;
    trixie)
      # shellcheck source=trixie.sh
      [ -n "${_LAB_TRIXIE_SOURCED:-}" ] || . "$LAB_REPO/scripts/lab/trixie.sh"
      lab_trixie_qemu || { lab_log "LAB_QEMU=trixie: no QEMU from trixie"; return 1; }
      LAB_QEMU_CMD=("${LAB_TRIXIE_QEMU[@]}") ;;
    /*) [ -x "$LAB_QEMU" ] || { lab_log "LAB_QEMU=$LAB_QEMU is not an executable"; return 1; }
      LAB_QEMU_CMD=("$LAB_QEMU") ;;
    *) lab_log "LAB_QEMU=$LAB_QEMU: want host, trixie or a path"; return 1 ;;
  esac
  LAB_QEMU_VERSION=$("${LAB_QEMU_CMD[@]}" --version 2>/dev/null | head -n1)
  LAB_QEMU_VERSION=${LAB_QEMU_VERSION#QEMU emulator version }
}

# lab_qemu_start LOG ARGS... : start QEMU (LAB_QEMU) in the background with the serial
# port written to LOG. Sets LAB_QEMU_PID. Killed at exit whatever happens.
lab_qemu_start() {
  local log=$1; shift
  lab_qemu_resolve || lab_die "no QEMU (LAB_QEMU=${LAB_QEMU:-host})"
  : >"$log"
  LAB_QEMU_LOG=$log
  "${LAB_QEMU_CMD[@]}" "${LAB_QEMU_BASE[@]}" -serial "file:$log" "$@" \
    </dev/null >"$log.qemu-stdout" 2>&1 &
  LAB_QEMU_PID=$!
  lab_log "qemu started (pid $LAB_QEMU_PID, QEMU ${LAB_QEMU_VERSION:-?}, LAB_QEMU=${LAB_QEMU:-host}), serial log $log"
}

lab_qemu_alive() { [ -n "$LAB_QEMU_PID" ] && kill -0 "$LAB_QEMU_PID" 2>/dev/null; }

# lab_qemu_kill : kill QEMU by PID (TERM, then KILL), reap it.
lab_qemu_kill() {
  [ -n "${LAB_QEMU_PID:-}" ] || return 0
  if kill -0 "$LAB_QEMU_PID" 2>/dev/null; then
    kill -TERM "$LAB_QEMU_PID" 2>/dev/null || true
    local i
    for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$LAB_QEMU_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$LAB_QEMU_PID" 2>/dev/null || true
  fi
  wait "$LAB_QEMU_PID" 2>/dev/null || true
  LAB_QEMU_PID=""
}

# lab_qemu_wait TIMEOUT [DONE_REGEX] : wait until QEMU exits, or DONE_REGEX appears in the
# serial log (then QEMU gets 10 s to exit by itself), or TIMEOUT seconds pass (then it is
# killed). Sets LAB_QEMU_RC (QEMU's exit code; 124 on timeout). Returns 0 if QEMU exited by
# itself through isa-debug-exit with code 1 (rc 3) or DONE_REGEX was seen, else 1.
lab_qemu_wait() {
  local timeout=$1 done_re=${2:-} t0 seen=0
  t0=$(date +%s)
  LAB_QEMU_RC=""
  while lab_qemu_alive; do
    if [ -n "$done_re" ] && [ $seen = 0 ] && grep -aqE "$done_re" "$LAB_QEMU_LOG" 2>/dev/null; then
      seen=1; timeout=$(( $(date +%s) - t0 + 10 ))
    fi
    if [ $(( $(date +%s) - t0 )) -ge "$timeout" ]; then
      [ $seen = 1 ] || lab_log "timeout after ${timeout}s: killing qemu (pid $LAB_QEMU_PID)"
      lab_qemu_kill; LAB_QEMU_RC=124
      [ $seen = 1 ] && return 0
      return 1
    fi
    sleep 0.5
  done
  wait "$LAB_QEMU_PID" 2>/dev/null; LAB_QEMU_RC=$?
  LAB_QEMU_PID=""
  if [ -n "$done_re" ] && grep -aqE "$done_re" "$LAB_QEMU_LOG" 2>/dev/null; then return 0; fi
  [ "$LAB_QEMU_RC" = 3 ]
}

# ---------------------------------------------------------------- serial-log markers

# lab_marker LOG REGEX : true if REGEX (ERE) occurs in LOG (binary-safe).
lab_marker() { grep -aqE "$2" "$1" 2>/dev/null; }

# lab_wait_marker LOG REGEX TIMEOUT : wait for REGEX; fails early if QEMU has died.
lab_wait_marker() {
  local log=$1 re=$2 timeout=$3 t0
  t0=$(date +%s)
  while ! lab_marker "$log" "$re"; do
    if [ -n "${LAB_QEMU_PID:-}" ] && ! lab_qemu_alive; then lab_marker "$log" "$re"; return; fi
    [ $(( $(date +%s) - t0 )) -lt "$timeout" ] || return 1
    sleep 0.5
  done
}

# lab_marker_value LOG KEY : for the last line "KEY value..." (after optional noise such as
# console prefixes), prints "value...". E.g. a guest echoes "LAB-RESULT bytes=123"; then
# `lab_marker_value serial.log LAB-RESULT` prints "bytes=123".
lab_marker_value() {
  grep -aoE "$2( .*)?\$" "$1" 2>/dev/null | tail -n1 | sed -e "s/^$2 \{0,1\}//" -e 's/\r$//'
}

# lab_kv "k1=v1 k2=v2" KEY : prints the value of KEY in a space-separated k=v string.
lab_kv() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -n1; }
