# shellcheck shell=bash
# scripts/lab/xen.sh — getting the Xen 4.17 hypervisor image the lab boots (sourced after
# lib.sh). Which one depends on the guest type:
# - PV guests need shadow paging for log-dirty (live migration, Remus), which the current
#   Debian security build of the hypervisor has disabled (LAB-NOTES pitfall 1), so:
#   source : build only the hypervisor from Debian's source package (`apt-get source xen=V`),
#            debian/xen-kconfig + CONFIG_SHADOW_PAGING=y CONFIG_XEN_SHSTK=n CONFIG_XEN_IBT=n;
#            cached by source version + overrides + compiler version. The versions, in
#            order: LAB_XEN_SOURCE_PINS (what is known to build and run here), then at most
#            LAB_XEN_SOURCE_OTHERS further versions the Sources index lists, newest first —
#            a point release that leaves the archive (on 2026-12-03 the security pool's
#            4.17.7 source answered 404 while the index still listed it) costs one failed
#            download, not the lab.
#   binary : a packaged hypervisor whose config has CONFIG_SHADOW_PAGING=y: the pinned
#            bookworm point release first, then the current candidate.
#   auto   : a cached build of a candidate, else source build, else binary (default for PV).
# - PVH (and HVM) guests log-dirty through HAP (TCG's -cpu max has SVM + NPT), so they run on
#   the hypervisor Debian ships as it is (LAB-NOTES "PVH and HVM guests under TCG"):
#   stock  : apt's candidate of xen-hypervisor-4.17-amd64, unpacked, no config requirement
#            (default for PVH); cached by version in xen-stock/. When that candidate cannot
#            be downloaded: the binary mode (the pinned point release), then a source build —
#            both also boot PVH — and LAB_XEN_ORIGIN says it fell back.
# - Xen 4.20 (Debian 13; scripts/xen-lab --xen-version 4.20):
#   stock-4.20 : trixie's xen-hypervisor-4.20-amd64 as it is (no shadow paging: PVH only),
#            fetched through the trixie root (scripts/lab/trixie.sh sourced). No fallback.
# lab_xen_image MODE  -> sets LAB_XEN_IMAGE (uncompressed multiboot ELF for QEMU -kernel),
#                        LAB_XEN_VERSION (the Debian version that runs), LAB_XEN_ORIGIN
#                        ("xen VERSION (how: stock Debian package, cached source build, ...)"),
#                        LAB_XEN_SHADOW (yes|no|unknown: CONFIG_SHADOW_PAGING of that image)
#                        and LAB_XEN_SKIPPED (the versions tried before it and why they were
#                        passed over).

LAB_XEN_PINNED_BINARY=${LAB_XEN_PINNED_BINARY:-xen-hypervisor-4.17-amd64=4.17.5+72-g01140da4e8-1}
# 4.17.5+72-g01140da4e8-1: the bookworm point release's source (main pool); built and ran every
# lab scenario on 2026-12-03. Space-separated, tried in order.
LAB_XEN_SOURCE_PINS=${LAB_XEN_SOURCE_PINS:-4.17.5+72-g01140da4e8-1}
LAB_XEN_SOURCE_OTHERS=${LAB_XEN_SOURCE_OTHERS:-2}
LAB_XEN_KCONFIG_OVERRIDES=${LAB_XEN_KCONFIG_OVERRIDES:-"CONFIG_SHADOW_PAGING=y CONFIG_XEN_SHSTK=n CONFIG_XEN_IBT=n"}
LAB_XEN_BUILD_DEPS=(gcc make libc6-dev binutils flex bison python3 dpkg-dev xz-utils)
LAB_DEBSRC_FILE=${LAB_DEBSRC_FILE:-/etc/apt/sources.list.d/romulus-deb-src.sources}

_lab_debsrc_content() {
  cat <<'EOF'
# Added by Romulus scripts/xen-lab: Debian source packages (apt-get source xen) for the lab.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}

# Idempotently add the deb-src entry; apt-get update when apt knows no xen source yet.
lab_xen_debsrc() {
  if [ ! -f "$LAB_DEBSRC_FILE" ] || ! cmp -s "$LAB_DEBSRC_FILE" <(_lab_debsrc_content); then
    lab_log "adding $LAB_DEBSRC_FILE"
    _lab_debsrc_content | _lab_sudo tee "$LAB_DEBSRC_FILE" >/dev/null
    lab_apt_update
  fi
  if [ -z "$(apt-cache showsrc xen 2>/dev/null | sed -n 's/^Version: //p')" ]; then
    lab_apt_update
  fi
}

# Key of a cached build: source version + kconfig overrides + compiler.
_lab_xen_key() {
  printf '%s\n%s\n%s\n' "$1" "$LAB_XEN_KCONFIG_OVERRIDES" "$(gcc --version 2>/dev/null | head -n1)" | sha256sum | cut -c1-12
}

# The source versions to try, in order: the pins (known to build and run in this lab), then
# at most LAB_XEN_SOURCE_OTHERS (2) further versions the Sources index lists, newest first.
# Without apt lists only the pins are known, which is all the cache lookup needs.
_lab_xen_source_candidates() {
  local v n=0 listed
  for v in $LAB_XEN_SOURCE_PINS; do echo "$v"; done
  listed=$(apt-cache showsrc xen 2>/dev/null | sed -n 's/^Version: //p' | sort -Vr | uniq)
  for v in $listed; do
    case " $LAB_XEN_SOURCE_PINS " in *" $v "*) continue ;; esac
    [ "$n" -lt "$LAB_XEN_SOURCE_OTHERS" ] || break
    echo "$v"; n=$((n + 1))
  done
}

# _lab_xen_use IMG VERSION HOW : the image to boot (sets _LAB_XEN_IMG, LAB_XEN_VERSION, _LAB_XEN_HOW).
_lab_xen_use() { _LAB_XEN_IMG=$1; LAB_XEN_VERSION=$2; _LAB_XEN_HOW=$3; }

# _lab_xen_shadow CONFIG -> yes|no|unknown: whether that hypervisor config has shadow paging.
_lab_xen_shadow() {
  if [ ! -s "$1" ]; then echo unknown
  elif grep -qx 'CONFIG_SHADOW_PAGING=y' "$1"; then echo yes
  else echo no; fi
}

# lab_xen_cached_build : the first candidate with a cached build (same version, overrides and
# compiler: a build with other overrides is never taken). Status 1 if none.
lab_xen_cached_build() {
  local v img
  for v in $(_lab_xen_source_candidates); do
    img=$LAB_CACHE/xen-build/$v-$(_lab_xen_key "$v")/xen
    if [ -s "$img" ]; then
      _lab_xen_use "$img" "$v" "built from Debian source, cached $(date -u -r "$img" +%Y-%m-%d)"
      return 0
    fi
  done
  return 1
}

# lab_xen_build_source : builds (or reuses) the hypervisor from the first candidate whose
# source apt can download and which builds with the overrides. Each version that fails is
# named in LAB_XEN_SKIPPED ("VERSION: why; ...").
lab_xen_build_source() {
  lab_xen_debsrc
  lab_need_host_pkgs "${LAB_XEN_BUILD_DEPS[@]}"
  local v key out src t0 why
  for v in $(_lab_xen_source_candidates); do
    key=$(_lab_xen_key "$v")
    out=$LAB_CACHE/xen-build/$v-$key
    if [ -s "$out/xen" ]; then
      _lab_xen_use "$out/xen" "$v" "built from Debian source, cached $(date -u -r "$out/xen" +%Y-%m-%d)"; return 0
    fi
    src=$LAB_CACHE/xen-src/$v
    rm -rf "$src"; mkdir -p "$src"; chmod 755 "$src"
    lab_log "apt-get source xen=$v"
    if ! ( cd "$src" && apt-get source -qq "xen=$v" ) >"$src.log" 2>&1; then
      # the reason without the mirror's address: "E: Failed to fetch xen_V.dsc  404  Not Found"
      why=$(grep -m1 '^E:' "$src.log" | sed -e 's/ \[IP: [^]]*\]//' -e 's#[a-z]*://[^ ]*/##' | cut -c1-160)
      lab_log "xen source $v not downloadable: ${why:-see $src.log}"
      LAB_XEN_SKIPPED+="$v: source not downloadable (${why:-?}); "
      rm -rf "$src"; continue
    fi
    local tree
    tree=$(ls -d "$src"/xen-*/ 2>/dev/null | head -n1)
    [ -n "$tree" ] && [ -f "$tree/debian/xen-kconfig" ] || {
      lab_log "unexpected source layout in $src"; LAB_XEN_SKIPPED+="$v: unexpected source layout; "; continue; }
    t0=$(date +%s)
    lab_log "building the hypervisor $v (shadow paging on) with $(nproc) jobs"
    cp "$tree/debian/xen-kconfig" "$tree/xen/.config"
    tr ' ' '\n' <<<"$LAB_XEN_KCONFIG_OVERRIDES" >>"$tree/xen/.config"
    if ! lab_quiet make -C "$tree/xen" olddefconfig || ! lab_quiet make -j"$(nproc)" -C "$tree/xen"; then
      lab_log "hypervisor build of $v failed"; LAB_XEN_SKIPPED+="$v: build failed; "; continue
    fi
    local o
    for o in $LAB_XEN_KCONFIG_OVERRIDES; do
      case $o in
        *=y) grep -qx "${o}" "$tree/xen/.config" ;;
        *=n) ! grep -qx "${o%=n}=y" "$tree/xen/.config" ;;
      esac || { lab_log "kconfig override $o did not stick"; LAB_XEN_SKIPPED+="$v: $o did not stick; "; continue 2; }
    done
    mkdir -p "$out.tmp"
    cp "$tree/xen/xen" "$out.tmp/xen"
    cp "$tree/xen/.config" "$out.tmp/config"
    echo "xen $v from source, overrides: $LAB_XEN_KCONFIG_OVERRIDES" >"$out.tmp/origin"
    rm -rf "$out"; mv "$out.tmp" "$out"
    rm -rf "$src" "$src.log"   # the source tree is large; the image is what we keep
    lab_log "hypervisor built in $(( $(date +%s) - t0 )) s"
    _lab_xen_use "$out/xen" "$v" "built from Debian source just now"; return 0
  done
  return 1
}

# lab_xen_binary -> a packaged hypervisor with shadow paging (pinned point release first).
lab_xen_binary() {
  local spec root ver out
  for spec in "$LAB_XEN_PINNED_BINARY" xen-hypervisor-4.17-amd64; do
    ver=$(lab_pkg_version "$spec") || { LAB_XEN_SKIPPED+="$spec: not known to apt; "; continue; }
    out=$LAB_CACHE/xen-bin/$ver/xen
    if [ -s "$out" ]; then _lab_xen_use "$out" "$ver" "Debian binary package, cached"; return 0; fi
    root=$(lab_pkg_root xen-hyp "xen-hypervisor-4.17-amd64=$ver" 2>/dev/null) ||
      { LAB_XEN_SKIPPED+="binary $ver: not downloadable; "; continue; }
    if ! grep -qx 'CONFIG_SHADOW_PAGING=y' "$root"/boot/xen-*.config 2>/dev/null; then
      lab_log "xen-hypervisor $ver has no shadow paging: not usable for PV log-dirty"
      LAB_XEN_SKIPPED+="binary $ver: no shadow paging; "; continue
    fi
    mkdir -p "$(dirname "$out")"
    zcat "$root"/boot/xen-4.17-amd64.gz >"$out.tmp" && mv "$out.tmp" "$out" || continue
    echo "xen $ver Debian binary package" >"$(dirname "$out")/origin"
    cp "$(ls "$root"/boot/xen-*.config | head -n1)" "$(dirname "$out")/config"
    _lab_xen_use "$out" "$ver" "Debian binary package"; return 0
  done
  return 1
}

# lab_xen_stock -> Debian's current hypervisor package as it is (apt's candidate of
# xen-hypervisor-4.17-amd64; on 2026-12-03 the security update 4.17.7+13-g2445b30a44-0+deb12u1,
# built without shadow paging). Whether it has shadow paging is recorded, never required.
# Status 1 (the reason in LAB_XEN_SKIPPED) when apt knows no candidate or cannot download it.
lab_xen_stock() {
  local pkg=xen-hypervisor-4.17-amd64 ver out root
  ver=$(lab_pkg_version "$pkg") || { LAB_XEN_SKIPPED+="stock $pkg: no candidate known to apt; "; return 1; }
  out=$LAB_CACHE/xen-stock/$ver
  if [ -s "$out/xen" ]; then
    _lab_xen_use "$out/xen" "$ver" "Debian's stock $pkg, apt's candidate, cached"; return 0
  fi
  if ! root=$(lab_pkg_root xen-hyp "$pkg=$ver"); then
    lab_log "the stock hypervisor $ver could not be downloaded"
    LAB_XEN_SKIPPED+="stock $ver: not downloadable; "; return 1
  fi
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  if ! zcat "$root"/boot/xen-4.17-amd64.gz >"$out.tmp/xen" 2>/dev/null || [ ! -s "$out.tmp/xen" ]; then
    lab_log "no boot/xen-4.17-amd64.gz in $pkg $ver"
    LAB_XEN_SKIPPED+="stock $ver: no hypervisor image in the package; "; rm -rf "$out.tmp"; return 1
  fi
  cp "$(ls "$root"/boot/xen-*.config 2>/dev/null | head -n1)" "$out.tmp/config" 2>/dev/null || true
  echo "xen $ver Debian's stock package (apt's candidate)" >"$out.tmp/origin"
  rm -rf "$out"; mv "$out.tmp" "$out"
  _lab_xen_use "$out/xen" "$ver" "Debian's stock $pkg, apt's candidate"
}

# lab_xen_stock_420 -> Debian 13 (trixie)'s stock xen-hypervisor-4.20-amd64, fetched by the
# trixie root's apt (scripts/lab/trixie.sh, which must be sourced): the candidate there, as it
# is (built without shadow paging: PVH guests only). Cached by version in xen-stock/4.20-VER.
lab_xen_stock_420() {
  local pkg=xen-hypervisor-4.20-amd64 spec ver out root
  declare -F lab_trixie_pkg_root >/dev/null || { LAB_XEN_SKIPPED+="stock 4.20: scripts/lab/trixie.sh not sourced; "; return 1; }
  spec=$(lab_trixie_pkg_versions "$pkg") || { LAB_XEN_SKIPPED+="stock $pkg: no candidate in trixie; "; return 1; }
  ver=${spec#*=}
  out=$LAB_CACHE/xen-stock/4.20-$ver
  if [ -s "$out/xen" ]; then
    _lab_xen_use "$out/xen" "$ver" "Debian 13's stock $pkg, trixie's candidate, cached"; return 0
  fi
  root=$(lab_trixie_pkg_root xen-hyp "$spec") || { LAB_XEN_SKIPPED+="stock $ver: not downloadable; "; return 1; }
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  if ! zcat "$root"/boot/xen-4.20-amd64.gz >"$out.tmp/xen" 2>/dev/null || [ ! -s "$out.tmp/xen" ]; then
    LAB_XEN_SKIPPED+="stock $ver: no boot/xen-4.20-amd64.gz in the package; "; rm -rf "$out.tmp"; return 1
  fi
  cp "$(ls "$root"/boot/xen-*.config 2>/dev/null | head -n1)" "$out.tmp/config" 2>/dev/null || true
  echo "xen $ver Debian 13's stock package (trixie's candidate)" >"$out.tmp/origin"
  rm -rf "$out"; mv "$out.tmp" "$out"
  _lab_xen_use "$out/xen" "$ver" "Debian 13's stock $pkg, trixie's candidate"
}

lab_xen_image() {
  local mode=${1:-auto}
  _LAB_XEN_IMG=""; LAB_XEN_VERSION=""; _LAB_XEN_HOW=""; LAB_XEN_SKIPPED=""; LAB_XEN_SHADOW=unknown
  case $mode in
    auto)   lab_xen_cached_build || lab_xen_build_source || lab_xen_binary ;;
    source) lab_xen_build_source ;;
    binary) lab_xen_binary ;;
    stock-4.20) lab_xen_stock_420 ;;
    stock)
      # The stock package, else what boots PVH too (every other image here has shadow
      # paging, and HAP): the pinned binary, a cached or fresh source build.
      if ! lab_xen_stock; then
        lab_log "falling back from the stock hypervisor (${LAB_XEN_SKIPPED%; }) to the pinned binary or a source build"
        if lab_xen_binary || lab_xen_cached_build || lab_xen_build_source; then
          _LAB_XEN_HOW="$_LAB_XEN_HOW; FALLBACK: the stock candidate was not usable"
        fi
      fi ;;
    /*|./*) [ -s "$mode" ] && _lab_xen_use "$mode" "" "given with --xen" ;;
    *) lab_die "unknown --xen mode '$mode' (auto|source|binary|stock|stock-4.20|PATH)" ;;
  esac
  local img=$_LAB_XEN_IMG
  [ -n "$img" ] || return 1
  LAB_XEN_IMAGE=$img
  # every image this file caches has its .config next to it (xen-build: config, xen-bin and
  # xen-stock: config); a --xen PATH image's is unknown
  LAB_XEN_SHADOW=$(_lab_xen_shadow "$(dirname "$img")/config")
  # what ran, for the log and the lab's summary: "xen VERSION (HOW)"
  if [ -n "$LAB_XEN_VERSION" ]; then
    LAB_XEN_ORIGIN="xen $LAB_XEN_VERSION ($_LAB_XEN_HOW)"
  else
    LAB_XEN_ORIGIN="$img ($_LAB_XEN_HOW)"
  fi
  # a gzip'd image (e.g. from /boot) must be unpacked for QEMU's multiboot loader
  if [ "$(head -c2 "$img" | od -An -tx1 | tr -d ' ')" = 1f8b ]; then
    mkdir -p "$LAB_CACHE/xen-user"
    zcat "$img" >"$LAB_CACHE/xen-user/xen" && LAB_XEN_IMAGE=$LAB_CACHE/xen-user/xen
  fi
  export LAB_XEN_IMAGE LAB_XEN_ORIGIN LAB_XEN_VERSION LAB_XEN_SKIPPED LAB_XEN_SHADOW
}
