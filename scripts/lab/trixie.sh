# shellcheck shell=bash
# scripts/lab/trixie.sh — a Debian 13 (trixie) build root, to build Romulus against Xen 4.20
# and to fetch trixie's packages (hypervisor, tools, kernel) for a 4.20 lab, on a Debian 12
# host that is NOT upgraded (its apt sources stay as they are). Sourced after lib.sh:
#   . "$repo/scripts/lab/lib.sh"; . "$repo/scripts/lab/trixie.sh"
#
#   lab_trixie_root                -> prints the path of a cached trixie amd64 root made by
#                                     mmdebstrap (variant apt + Romulus's build dependencies).
#                                     Cached under $LAB_CACHE/trixie/root-<key>, key = suite +
#                                     mirror + variant + package list; made in a .tmp dir and
#                                     renamed, so a half-made root is never used.
#   lab_trixie_run ROOT [-b SRC:DST[:ro]]... -- CMD...
#                                  -> runs CMD chrooted in ROOT inside a private mount
#                                     namespace (unshare -m): the root bound on itself, /proc,
#                                     /dev, /sys, tmpfs /tmp and /run, the host's resolv.conf, plus each -b bind
#                                     (DST is a path inside the root). Nothing stays mounted.
#   lab_trixie_build_romulus SRC OUT [BUILD_TYPE]
#                                  -> configures + builds SRC (bind-mounted read-only at
#                                     /romulus/src) into OUT (at /romulus/out), RelWithDebInfo
#                                     like scripts/build release; prints OUT/cli/romulus. Sets
#                                     LAB_TRIXIE_XEN_VERSION (pkg-config xencontrol --modversion
#                                     inside the root) and logs it. The build log is OUT/build.log.
#   lab_trixie_snapshot REPO REV DIR
#                                  -> DIR = the files of commit REV (git archive); unchanged files
#                                     keep their mtime, so rebuilding a newer REV is incremental.
#   lab_trixie_test_romulus OUT [CTEST_ARGS...]
#                                  -> runs the unit tests (ctest minus e2e./lab./fuzz./asan.)
#                                     of a tree built by lab_trixie_build_romulus, inside the root.
#   lab_trixie_pkg_versions SPEC...-> "pkg=version" per PKG[=VER], from the root's apt (trixie).
#   lab_trixie_pkg_root NAME PKG[=VER]...
#                                  -> like lab_pkg_root: trixie .debs downloaded by the root's
#                                     apt-get into $LAB_CACHE/trixie/debs, unpacked with dpkg-deb
#                                     -x into $LAB_CACHE/roots/trixie-NAME-<hash of pkg=version>.
#   lab_trixie_kernel [PKG[=VER]]  -> like lab_kernel, for trixie's kernel (default: what
#                                     linux-image-amd64 depends on there): sets LAB_KVER,
#                                     LAB_KROOT, LAB_VMLINUZ, LAB_MODDIR, so lab_module_files and
#                                     lab_stage_add_modules work on it unchanged.
#   lab_trixie_stage_add_libs STAGE FILE [LIBROOT...], lab_trixie_stage_add_bin STAGE SRC [DEST] [LIBROOT...]
#   lab_trixie_stage_add_tree STAGE ROOT PATH...  (lab_stage_add_tree, trixie closures)
#                                  -> lab_stage_add_libs/_bin for binaries linked against trixie's
#                                     glibc 2.41 (Xen 4.20's xl needs GLIBC_2.38): the closure is
#                                     resolved by the root's ld.so, the libraries come from trixie.
#
# Needs: root (mmdebstrap root mode, chroot, mount), the host package mmdebstrap (installed by
# name on first use; the keyring for trixie is in bookworm's debian-archive-keyring).
# Environment:
#   LAB_TRIXIE_SUITE   (trixie)  LAB_TRIXIE_MIRROR (http://deb.debian.org/debian: without an
#                      explicit mirror mmdebstrap would also add the security suite)
#   LAB_TRIXIE_EXTRA   extra packages for the root (space-separated; part of the cache key)
#   LAB_TRIXIE_SETUP   the scripts/setup whose package groups the root gets (default: this
#                      repo's; lab_trixie_build_romulus uses the one of the source it builds)

if [ -n "${_LAB_TRIXIE_SOURCED:-}" ]; then return 0; fi
_LAB_TRIXIE_SOURCED=1

LAB_TRIXIE_SUITE=${LAB_TRIXIE_SUITE:-trixie}
LAB_TRIXIE_MIRROR=${LAB_TRIXIE_MIRROR:-http://deb.debian.org/debian}
LAB_TRIXIE_VARIANT=apt
# The root's packages: scripts/setup's "build" and "libraries" groups (read from that file, so a
# library added there reaches the root: a new list is a new cache key, a new root), minus
# clang and libclang-rt-*-dev (only the fuzz flavour needs them; trixie's clang is 19), plus
# the tools the unit and end-to-end tests call. Every name is the same in trixie as in
# bookworm (checked on 2026-12-03). LAB_TRIXIE_FALLBACK is used if scripts/setup can't be read.
LAB_TRIXIE_FALLBACK=(
  cmake ninja-build g++ pkg-config
  libboost-program-options-dev libspdlog-dev libgtest-dev libgmock-dev libbenchmark-dev
  libxen-dev liblz4-dev libzstd-dev libxxhash-dev libssl-dev libnl-route-3-dev nlohmann-json3-dev
)
LAB_TRIXIE_TEST_TOOLS=(iproute2 openssl procps psmisc python3)

_lab_trixie_setup_pkgs() {
  awk '/^PACKAGES=\(/ {p = 1; next}  p && /^\)/ {exit}
       p && /^ *# *(build|libraries)/ {g = 1; next}  p && /^ *#/ {g = 0; next}  p && g {print}' \
    "${LAB_TRIXIE_SETUP:-$LAB_REPO/scripts/setup}" 2>/dev/null | tr -s ' \t' '\n' | grep -v -E '^(|clang|libclang-rt-.*)$' || true
}

# Bump when the way the root is made changes (part of the cache key).
_LAB_TRIXIE_FORMAT=1

_lab_trixie_pkglist() {
  local base
  base=$(_lab_trixie_setup_pkgs)
  [ -n "$base" ] || base=$(printf '%s\n' "${LAB_TRIXIE_FALLBACK[@]}")
  # shellcheck disable=SC2086
  printf '%s\n' $base "${LAB_TRIXIE_TEST_TOOLS[@]}" ${LAB_TRIXIE_EXTRA:-} | LC_ALL=C sort -u
}

_lab_trixie_key() {
  { echo "format=$_LAB_TRIXIE_FORMAT suite=$LAB_TRIXIE_SUITE mirror=$LAB_TRIXIE_MIRROR variant=$LAB_TRIXIE_VARIANT arch=$LAB_ARCH"
    _lab_trixie_pkglist; } | sha256sum | cut -c1-16
}

lab_trixie_root() {
  local key root tmp t0 pkgs
  key=$(_lab_trixie_key)
  root=$LAB_CACHE/trixie/root-$key
  if [ -e "$root/.complete" ]; then echo "$root"; return 0; fi
  [ "$(id -u)" -eq 0 ] || { lab_log "lab_trixie_root: needs root (mmdebstrap root mode, chroot)"; return 1; }
  command -v mmdebstrap >/dev/null || lab_need_host_pkgs mmdebstrap
  mkdir -p "$LAB_CACHE/trixie"
  tmp=$root.tmp.$$
  rm -rf "$tmp"
  pkgs=$(_lab_trixie_pkglist | paste -sd, -)
  lab_log "mmdebstrap $LAB_TRIXIE_SUITE ($LAB_ARCH, variant $LAB_TRIXIE_VARIANT) into $tmp"
  t0=$(date +%s)
  # Package lists are kept (--skip=cleanup/apt/lists): lab_trixie_pkg_root's apt needs them.
  if ! lab_quiet mmdebstrap --mode=root --variant="$LAB_TRIXIE_VARIANT" --arch="$LAB_ARCH" \
      --aptopt='Acquire::Languages "none"' --include="$pkgs" --skip=cleanup/apt/lists \
      --customize-hook='mkdir -p "$1/romulus/src" "$1/romulus/out" "$1/romulus/debs"' \
      "$LAB_TRIXIE_SUITE" "$tmp" "$LAB_TRIXIE_MIRROR"; then
    rm -rf "$tmp"; return 1
  fi
  { echo "suite=$LAB_TRIXIE_SUITE mirror=$LAB_TRIXIE_MIRROR variant=$LAB_TRIXIE_VARIANT arch=$LAB_ARCH"
    echo "created=$(date -u +%FT%TZ) seconds=$(( $(date +%s) - t0 ))"
    # shellcheck disable=SC2046
    chroot "$tmp" dpkg-query -W -f='${Package}=${Version}\n' $(_lab_trixie_pkglist)
  } >"$tmp/.romulus-root" 2>/dev/null
  date +%s >"$tmp/.apt-updated"
  touch "$tmp/.complete"
  rm -rf "$root"; mv "$tmp" "$root"
  lab_log "trixie root ready in $(( $(date +%s) - t0 ))s: $root ($(du -sh "$root" 2>/dev/null | cut -f1))"
  echo "$root"
}

# lab_trixie_run ROOT [-b SRC:DST[:ro]]... -- CMD...
lab_trixie_run() {
  local root=$1; shift
  local binds=()
  while [ $# -gt 0 ]; do
    case $1 in
      -b) binds+=("$2"); shift 2 ;;
      --) shift; break ;;
      *) break ;;
    esac
  done
  [ -d "$root/usr" ] || { lab_log "lab_trixie_run: $root is not a root"; return 1; }
  # The mounts live in a private namespace: they vanish with it, whatever happens.
  unshare --mount --propagation private -- /bin/bash -euc '
    root=$1; nb=$2; shift 2
    # The root a mount point of its own: `ip netns exec` (the netbuf tests) does
    # mount --make-rslave /, which fails on a plain directory.
    mount --bind "$root" "$root"
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount -t sysfs sysfs "$root/sys"
    mount -t tmpfs tmpfs "$root/tmp"
    mount -t tmpfs tmpfs "$root/run"
    if [ -f /etc/resolv.conf ]; then
      [ -e "$root/etc/resolv.conf" ] && [ ! -L "$root/etc/resolv.conf" ] || { rm -f "$root/etc/resolv.conf"; : >"$root/etc/resolv.conf"; }
      mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
    fi
    for (( i = 0; i < nb; i++ )); do
      b=$1; shift
      src=${b%%:*}; rest=${b#*:}; dst=${rest%%:*}; opt=${rest#"$dst"}
      mkdir -p "$root/$dst"
      mount --bind "$src" "$root/$dst"
      [ "$opt" != ":ro" ] || mount -o remount,bind,ro "$root/$dst"
    done
    exec chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
  ' lab-trixie-run "$root" "${#binds[@]}" "${binds[@]}" "$@"
}

# lab_trixie_build_romulus SRC OUT [BUILD_TYPE [TARGET]]
# TARGET: one ninja target (e.g. romulus: the CLI alone, what a lab boot runs, a third of the
# tree's compile time); default the whole tree, tests included.
lab_trixie_build_romulus() {
  local src out type=${3:-RelWithDebInfo} target=${4:-all} root t0 rc
  src=$(cd "$1" && pwd) || return 1
  mkdir -p "$2" && out=$(cd "$2" && pwd) || return 1
  # The root's package list follows the scripts/setup of the source being built.
  [ -f "$src/scripts/setup" ] && LAB_TRIXIE_SETUP=$src/scripts/setup
  root=$(lab_trixie_root) || return 1
  LAB_TRIXIE_XEN_VERSION=$(lab_trixie_run "$root" -- pkg-config --modversion xencontrol 2>/dev/null) || LAB_TRIXIE_XEN_VERSION=""
  LAB_TRIXIE_LIBXEN_DEB=$(lab_trixie_run "$root" -- dpkg-query -W -f='${Version}' libxen-dev 2>/dev/null) || LAB_TRIXIE_LIBXEN_DEB=""
  export LAB_TRIXIE_XEN_VERSION LAB_TRIXIE_LIBXEN_DEB
  lab_log "building Romulus ($type) in $root: Xen tools $LAB_TRIXIE_XEN_VERSION (pkg-config xencontrol; libxen-dev $LAB_TRIXIE_LIBXEN_DEB), $(lab_trixie_run "$root" -- g++ --version | head -n1)"
  t0=$(date +%s)
  # -k 0: every error of the tree in one run, not only the first target's.
  # The source is read-only inside the root; the build tree is another mount. The paths inside
  # are fixed (/romulus/src, /romulus/out) so that a warm rebuild reuses the CMake cache.
  if lab_trixie_run "$root" -b "$src:/romulus/src:ro" -b "$out:/romulus/out" -- /bin/bash -c '
      set -e
      cmake -S /romulus/src -B /romulus/out -G Ninja -DCMAKE_BUILD_TYPE='"$type"' >/dev/null
      cmake --build /romulus/out -j "$(nproc)" --target '"$target"' -- -k 0' >"$out/build.log" 2>&1; then rc=0; else rc=$?; fi
  {
    echo "root=$root"
    echo "src=$src"
    echo "xencontrol=$LAB_TRIXIE_XEN_VERSION libxen-dev=$LAB_TRIXIE_LIBXEN_DEB"
    echo "build_type=$type target=$target seconds=$(( $(date +%s) - t0 )) rc=$rc"
  } >"$out/trixie-build.info"
  local nerr nwarn
  nerr=$(grep -c 'error:' "$out/build.log" || true)
  nwarn=$(grep -c 'warning:' "$out/build.log" || true)
  lab_log "build finished in $(( $(date +%s) - t0 ))s (rc $rc, $nerr error lines, $nwarn warning lines; log $out/build.log)"
  if [ $rc -ne 0 ]; then
    grep -E '(error|warning):' "$out/build.log" | sed 's|/romulus/src/||' | sort -u | head -n 40 >&2
    return $rc
  fi
  [ -x "$out/cli/romulus" ] || { lab_log "no $out/cli/romulus after the build"; return 1; }
  echo "$out/cli/romulus"
}

# lab_trixie_snapshot REPO REV DIR : DIR holds exactly the files of commit REV (git archive),
# for a build that does not see other people's uncommitted edits in a shared work tree. Files
# whose content is unchanged keep their mtime (a warm rebuild stays incremental); changed ones
# get a fresh mtime (ninja sees them even when the commit is older than the last build).
lab_trixie_snapshot() {
  local repo=$1 rev=$2 dir=$3 tmp f sha
  sha=$(git -C "$repo" rev-parse --verify "$rev^{commit}") || return 1
  tmp=$(mktemp -d)
  git -C "$repo" archive "$sha" | tar -x -C "$tmp" || { rm -rf "$tmp"; return 1; }
  mkdir -p "$dir"
  while IFS= read -r -d '' f; do
    if [ -L "$tmp/$f" ] || [ -L "$dir/$f" ] || ! cmp -s "$tmp/$f" "$dir/$f"; then
      mkdir -p "$dir/$(dirname "$f")"; rm -f "$dir/$f"; cp -P "$tmp/$f" "$dir/$f"
    fi
  done < <(cd "$tmp" && find . \( -type f -o -type l \) -print0)
  while IFS= read -r -d '' f; do
    [ -e "$tmp/$f" ] || [ -L "$tmp/$f" ] || rm -f "$dir/$f"
  done < <(cd "$dir" && find . \( -type f -o -type l \) -print0)
  rm -rf "$tmp"
  echo "$sha" >"$dir.rev"
  lab_log "source snapshot of ${sha:0:12} in $dir"
}

# lab_trixie_test_romulus OUT [CTEST_ARGS...] : the unit tests (GoogleTest, everything but
# the e2e./lab./fuzz./asan. tests) of a tree built by lab_trixie_build_romulus.
lab_trixie_test_romulus() {
  local out src root
  out=$(cd "$1" && pwd) || return 1; shift
  root=$(sed -n 's/^root=//p' "$out/trixie-build.info" 2>/dev/null)
  [ -d "$root" ] || { lab_log "$out was not built by lab_trixie_build_romulus"; return 1; }
  src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$out/CMakeCache.txt")
  [ "$src" = /romulus/src ] || { lab_log "unexpected source dir in $out/CMakeCache.txt: $src"; return 1; }
  src=$(sed -n 's/^src=//p' "$out/trixie-build.info")
  lab_trixie_run "$root" -b "$src:/romulus/src:ro" -b "$out:/romulus/out" -- \
    /bin/bash -c 'cd /romulus/out && ctest --output-on-failure --timeout 600 -E "^(e2e|lab|fuzz|asan)\\." "$@"' ctest "$@"
}

# ---------------------------------------------------------------- trixie packages

# Refresh the root's package lists at most once a day (a stamp in the root).
_lab_trixie_apt_ready() {
  local root=$1
  local lists=("$root"/var/lib/apt/lists/*_Packages)
  if [ -z "$(find "$root/.apt-updated" -mmin -1440 2>/dev/null)" ] || [ ! -e "${lists[0]}" ]; then
    lab_log "apt-get update (trixie root)"
    lab_quiet lab_trixie_run "$root" -- apt-get update -qq || { lab_log "warning: apt-get update in the trixie root failed"; return 0; }
    date +%s >"$root/.apt-updated"
  fi
}

# lab_trixie_pkg_versions SPEC... -> "pkg=version" per SPEC, candidates from the trixie root.
lab_trixie_pkg_versions() {
  local root spec plain=() out pkg ver
  root=$(lab_trixie_root) || return 1
  _lab_trixie_apt_ready "$root"
  for spec in "$@"; do [ "$spec" = "${spec%%=*}" ] && plain+=("$spec"); done
  out=""
  if [ ${#plain[@]} -gt 0 ]; then
    out=$(lab_trixie_run "$root" -- apt-cache policy "${plain[@]}" 2>/dev/null | awk '
      /^[^ ].*:$/ { pkg = substr($0, 1, length($0) - 1) }
      /^  Candidate:/ { if ($2 != "(none)") print pkg "=" $2 }')
  fi
  for spec in "$@"; do
    pkg=${spec%%=*}
    if [ "$spec" != "$pkg" ]; then echo "$spec"; continue; fi
    ver=$(awk -F= -v p="$pkg" '$1 == p { print $2; exit }' <<<"$out")
    [ -n "$ver" ] || { lab_log "no candidate version of '$pkg' in $LAB_TRIXIE_SUITE"; return 1; }
    echo "$pkg=$ver"
  done
}

# lab_trixie_debs_get PKG=VER... -> trixie .debs in $LAB_CACHE/trixie/debs, paths in order.
lab_trixie_debs_get() {
  local root d=$LAB_CACHE/trixie/debs spec f want=() files=()
  root=$(lab_trixie_root) || return 1
  mkdir -p "$d"; chmod 755 "$d" 2>/dev/null || true
  for spec in "$@"; do
    [ -n "$(_lab_deb_file "$d" "${spec%%=*}" "${spec#*=}")" ] || want+=("$spec")
  done
  if [ ${#want[@]} -gt 0 ]; then
    lab_log "apt-get download (trixie) ${want[*]}"
    lab_trixie_run "$root" -b "$d:/romulus/debs" -- /bin/sh -c 'cd /romulus/debs && exec apt-get download -qq "$@"' \
      dl "${want[@]}" >/dev/null 2>"$d/.download.err" \
      || { grep -v '^W: Download is performed unsandboxed' "$d/.download.err" >&2; return 1; }
  fi
  for spec in "$@"; do
    f=$(_lab_deb_file "$d" "${spec%%=*}" "${spec#*=}")
    [ -n "$f" ] || { lab_log "download of $spec (trixie) produced no file"; return 1; }
    files+=("$f")
  done
  printf '%s\n' "${files[@]}"
}

# lab_trixie_pkg_root NAME PKG[=VER]... -> a directory holding the trixie packages unpacked
# together (dpkg-deb -x), cached by the exact versions. Nothing is installed anywhere.
lab_trixie_pkg_root() {
  local name=$1; shift
  local keys key root tmp f debs
  keys=$(lab_trixie_pkg_versions "$@") || return 1
  key=$( { echo "suite=$LAB_TRIXIE_SUITE"; sort <<<"$keys"; } | sha256sum | cut -c1-16)
  root=$LAB_CACHE/roots/trixie-$name-$key
  if [ -e "$root/.complete" ]; then echo "$root"; return 0; fi
  # shellcheck disable=SC2086
  debs=$(lab_trixie_debs_get $keys) || return 1
  tmp=$root.tmp.$$
  rm -rf "$tmp"; mkdir -p "$tmp"
  while IFS= read -r f; do dpkg-deb -x "$f" "$tmp" || { rm -rf "$tmp"; return 1; }; done <<<"$debs"
  printf '%s\n' "$keys" >"$tmp/.packages"
  touch "$tmp/.complete"
  rm -rf "$root"; mv "$tmp" "$root"
  echo "$root"
}

# lab_trixie_kernel [PKG[=VER]] : trixie's kernel, as lab_kernel does for bookworm's.
lab_trixie_kernel() {
  local spec=${1:-} root
  if [ -z "$spec" ]; then
    root=$(lab_trixie_root) || return 1
    _lab_trixie_apt_ready "$root"
    spec=$(lab_trixie_run "$root" -- apt-cache depends linux-image-amd64 2>/dev/null \
      | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [ -n "$spec" ] || { lab_log "cannot resolve trixie's linux-image-amd64 to a kernel package"; return 1; }
  fi
  LAB_KROOT=$(lab_trixie_pkg_root kernel "$spec") || { lab_log "cannot fetch trixie kernel $spec"; return 1; }
  LAB_VMLINUZ=$(ls "$LAB_KROOT"/boot/vmlinuz-* 2>/dev/null | head -n1)
  [ -n "$LAB_VMLINUZ" ] || { lab_log "no vmlinuz in $spec"; return 1; }
  LAB_KVER=${LAB_VMLINUZ##*/vmlinuz-}
  # trixie's kernel package ships its modules under usr/lib/modules (merged /usr); the host's
  # depmod -b and modprobe -d look in ROOT/lib/modules: give the unpacked root lib -> usr/lib.
  if [ -d "$LAB_KROOT/usr/lib/modules/$LAB_KVER" ] && [ ! -e "$LAB_KROOT/lib" ]; then
    ln -s usr/lib "$LAB_KROOT/lib"
  fi
  LAB_MODDIR=$LAB_KROOT/lib/modules/$LAB_KVER
  if [ ! -s "$LAB_MODDIR/modules.dep" ]; then
    depmod -b "$LAB_KROOT" "$LAB_KVER" || { lab_log "depmod failed on $LAB_KROOT"; return 1; }
  fi
  export LAB_KVER LAB_KROOT LAB_VMLINUZ LAB_MODDIR
}

# lab_trixie_stage_add_libs STAGE FILE [LIBROOT...] : lab_stage_add_libs for trixie binaries
# (Xen 4.20 tools, a romulus built here): they need GLIBC_2.38, which the host's ldd (glibc
# 2.36) cannot load, so the closure is resolved by trixie's own ld.so inside the root
# (`ld.so --list`), libraries looked up in the LIBROOTs (unpacked packages, e.g. from
# lab_trixie_pkg_root) first, then in the root; each is put at its path relative to its
# LIBROOT or the root, plus libgcc_s.so.1 (glibc dlopens it; LAB-NOTES pitfall 4). The stage's
# glibc is then trixie's: stage only trixie binaries (or static ones) next to it.
lab_trixie_stage_add_libs() {
  local s=$1 f=$2; shift 2
  local libroots=("$@") root binds=() llp="" i out lib rel from
  file -L "$f" 2>/dev/null | grep 'dynamically linked' >/dev/null || return 0
  root=$(lab_trixie_root) || return 1
  f=$(readlink -f "$f")
  binds=(-b "$(dirname "$f"):/romulus/bin:ro")
  for i in "${!libroots[@]}"; do
    binds+=(-b "${libroots[$i]}:/romulus/lib$i:ro")
    llp+="${llp:+:}/romulus/lib$i/usr/lib/$LAB_MULTIARCH:/romulus/lib$i/lib/$LAB_MULTIARCH:/romulus/lib$i/usr/lib"
  done
  out=$(lab_trixie_run "$root" "${binds[@]}" -- /usr/lib64/ld-linux-x86-64.so.2 --list \
          ${llp:+--library-path "$llp"} "/romulus/bin/$(basename "$f")" 2>&1) \
    || { lab_log "ld.so --list $f (trixie) failed: $out"; return 1; }
  if grep -q 'not found' <<<"$out"; then lab_log "ld.so --list $f: $(grep 'not found' <<<"$out" | tr '\n' ' ')"; return 1; fi
  for lib in $(awk '/=>/ && $3 ~ /^\// {print $3} !/=>/ && $1 ~ /^\// {print $1}' <<<"$out") \
             /usr/lib/$LAB_MULTIARCH/libgcc_s.so.1; do
    rel=$lib; from=$root$lib
    if [[ $lib =~ ^/romulus/lib([0-9]+)(/.*)$ ]]; then
      rel=${BASH_REMATCH[2]}; from=${libroots[${BASH_REMATCH[1]}]}$rel
    fi
    [ -e "$s/$rel" ] || lab_stage_add_file "$s" "$from" "$rel" || return 1
  done
}

# lab_trixie_stage_add_bin STAGE SRC [DEST] [LIBROOT...] : lab_stage_add_bin for a trixie binary.
lab_trixie_stage_add_bin() {
  local s=$1 src=$2 dst=${3:-$2}; shift 3 2>/dev/null || shift $#
  lab_stage_add_file "$s" "$src" "$dst" || return 1
  chmod 755 "$s/$dst"
  lab_trixie_stage_add_libs "$s" "$src" "$@"
}

# lab_trixie_stage_add_tree STAGE ROOT PATH... : lab_stage_add_tree for trixie trees (e.g. the
# Xen 4.20 tools from lab_trixie_pkg_root): PATHs copied at the same relative paths, symlinks
# kept, every ELF file's closure resolved by trixie's ld.so, ROOT's libraries first.
lab_trixie_stage_add_tree() {
  local s=$1 root=$2; shift 2
  local p f
  for p in "$@"; do
    p=${p#/}
    [ -e "$root/$p" ] || [ -L "$root/$p" ] || { lab_log "lab_trixie_stage_add_tree: missing $root/$p"; return 1; }
    ( cd "$root" && cp -a --parents "$p" "$s/" ) || return 1
    while IFS= read -r f; do
      if [ "$(head -c4 "$f" 2>/dev/null | tr -d '\177')" = ELF ]; then lab_trixie_stage_add_libs "$s" "$f" "$root" || return 1; fi
    done < <(find "$root/$p" -type f 2>/dev/null)
  done
}

# ---------------------------------------------------------------- trixie's QEMU

# lab_trixie_qemu : sets LAB_TRIXIE_QEMU, the command (an argv prefix: ARGS... follow it) that
# runs Debian 13's qemu-system-x86_64 (QEMU 10.0.13+ds-0+deb13u1 on 2026-12-06) on this Debian
# 12 host, for LAB_QEMU=trixie (lib.sh lab_qemu_start; docs/XEN-420.md "Outer QEMU"). Nothing
# is installed: qemu-system-x86 and the packages it needs beyond the trixie root (apt's own
# answer: `apt-get install -s --no-install-recommends` in the root, nothing changed there; 40
# packages, qemu-system-common/-data, seabios, ipxe-qemu and libraries) are fetched by name
# and unpacked with lab_trixie_pkg_root. It runs on the host (its paths, files, /dev as the
# host's QEMU sees them), loaded by the root's ld.so (trixie's glibc) with the package root's
# and the root's libraries only (--inhibit-cache: never the host's ld.so.cache). Its firmware
# (SeaBIOS, option ROMs: multiboot_dma.bin for Xen's -kernel) comes with -L from the package
# root. Its modules too: QEMU also looks in its built-in /usr/lib/x86_64-linux-gnu/qemu, where
# the host's QEMU 7.2 keeps its own (which it loads, then refuses: "Only modules from the same
# build can be loaded", after having pulled their host libraries into the process), so in a
# private mount namespace the package root's module directory is bound over that path.
# unshare (no --fork), sh and ld.so each exec the next: the PID lab_qemu_start records is
# QEMU's. Also sets LAB_TRIXIE_QEMU_VERSION (`--version`'s first line). Needs root.
LAB_TRIXIE_QEMU=()
lab_trixie_qemu() {
  [ ${#LAB_TRIXIE_QEMU[@]} -eq 0 ] || return 0
  local root specs q ld lp mods hostmods=/usr/lib/$LAB_MULTIARCH/qemu
  [ "$(id -u)" -eq 0 ] || { lab_log "lab_trixie_qemu: needs root (the trixie root, a mount namespace)"; return 1; }
  root=$(lab_trixie_root) || return 1
  _lab_trixie_apt_ready "$root"
  specs=$(lab_trixie_run "$root" -- apt-get install -s -qq --no-install-recommends qemu-system-x86 2>/dev/null |
    awk '$1 == "Inst" { v = $3; gsub(/[()]/, "", v); print $2 "=" v }')
  grep -q '^qemu-system-x86=' <<<"$specs" ||
    { lab_log "lab_trixie_qemu: apt in the trixie root offers no qemu-system-x86 to install"; return 1; }
  # shellcheck disable=SC2086
  q=$(lab_trixie_pkg_root qemu-x86 $specs) || { lab_log "cannot fetch trixie's qemu-system-x86"; return 1; }
  ld=$root/usr/lib64/ld-linux-x86-64.so.2
  lp=$q/usr/lib/$LAB_MULTIARCH:$q/lib/$LAB_MULTIARCH:$root/usr/lib/$LAB_MULTIARCH
  mods=$q/usr/lib/$LAB_MULTIARCH/qemu
  if [ ! -x "$q/usr/bin/qemu-system-x86_64" ] || [ ! -e "$ld" ]; then
    lab_log "lab_trixie_qemu: no usr/bin/qemu-system-x86_64 in $q or no $ld"; return 1
  fi
  # shellcheck disable=SC2016  # (the script's $1 $2 $@ are its own arguments)
  LAB_TRIXIE_QEMU=(unshare --mount --propagation private -- /bin/sh -c
    '[ ! -d "$2" ] || mount --bind "$1" "$2" || exit 1; shift 2; exec "$@"' lab-trixie-qemu "$mods" "$hostmods"
    /usr/bin/env QEMU_MODULE_DIR="$mods" "$ld" --inhibit-cache --library-path "$lp" "$q/usr/bin/qemu-system-x86_64"
    -L "$q/usr/share/qemu" -L "$q/usr/share/seabios" -L "$q/usr/lib/ipxe/qemu")
  LAB_TRIXIE_QEMU_VERSION=$("${LAB_TRIXIE_QEMU[@]}" --version 2>&1 | head -n1)
  case $LAB_TRIXIE_QEMU_VERSION in
    "QEMU emulator version"*) lab_log "trixie's QEMU: $LAB_TRIXIE_QEMU_VERSION ($q)" ;;
    *) lab_log "lab_trixie_qemu: $q/usr/bin/qemu-system-x86_64 --version says: $LAB_TRIXIE_QEMU_VERSION"; LAB_TRIXIE_QEMU=(); return 1 ;;
  esac
}
