# shellcheck shell=bash
# scripts/lab/xen.sh — getting a Xen 4.17 hypervisor image WITH shadow paging (sourced after
# lib.sh). PV log-dirty (live migration, Remus) needs shadow paging; the current Debian
# security build of the hypervisor has it disabled (LAB-NOTES pitfall 1), so:
#   source : build only the hypervisor from Debian's source package (`apt-get source xen`,
#            newest version the mirror actually serves), debian/xen-kconfig +
#            CONFIG_SHADOW_PAGING=y CONFIG_XEN_SHSTK=n CONFIG_XEN_IBT=n; cached by
#            source version + overrides + compiler version.
#   binary : a packaged hypervisor whose config has CONFIG_SHADOW_PAGING=y: the pinned
#            bookworm point release first, then the current candidate.
#   auto   : cached source build, else source build, else binary (default).
# lab_xen_image MODE  -> sets LAB_XEN_IMAGE (uncompressed multiboot ELF for QEMU -kernel)
#                        and LAB_XEN_ORIGIN (a one-line description).

LAB_XEN_PINNED_BINARY=${LAB_XEN_PINNED_BINARY:-xen-hypervisor-4.17-amd64=4.17.5+72-g01140da4e8-1}
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

# lab_xen_cached_build -> prints a cached source-built image if one exists for a version apt knows.
lab_xen_cached_build() {
  local v img
  for v in $(apt-cache showsrc xen 2>/dev/null | sed -n 's/^Version: //p' | sort -Vr | uniq); do
    img=$LAB_CACHE/xen-build/$v-$(_lab_xen_key "$v")/xen
    [ -s "$img" ] && { echo "$img"; return 0; }
  done
  # apt lists may be gone (fresh apt state): accept any cached build
  img=$(ls -t "$LAB_CACHE"/xen-build/*/xen 2>/dev/null | head -n1)
  [ -n "$img" ] && { echo "$img"; return 0; }
  return 1
}

# lab_xen_build_source -> builds (or reuses) the hypervisor from the newest downloadable
# source version; prints the image path.
lab_xen_build_source() {
  lab_xen_debsrc
  lab_need_host_pkgs "${LAB_XEN_BUILD_DEPS[@]}"
  local v key out src t0
  for v in $(apt-cache showsrc xen 2>/dev/null | sed -n 's/^Version: //p' | sort -Vr | uniq); do
    key=$(_lab_xen_key "$v")
    out=$LAB_CACHE/xen-build/$v-$key
    if [ -s "$out/xen" ]; then echo "$out/xen"; return 0; fi
    src=$LAB_CACHE/xen-src/$v
    rm -rf "$src"; mkdir -p "$src"; chmod 755 "$src"
    lab_log "apt-get source xen=$v"
    if ! ( cd "$src" && apt-get source -qq "xen=$v" ) >"$src.log" 2>&1; then
      lab_log "xen source $v not downloadable: $(grep -m1 '^E:' "$src.log")"
      rm -rf "$src"; continue
    fi
    local tree
    tree=$(ls -d "$src"/xen-*/ 2>/dev/null | head -n1)
    [ -n "$tree" ] && [ -f "$tree/debian/xen-kconfig" ] || { lab_log "unexpected source layout in $src"; continue; }
    t0=$(date +%s)
    lab_log "building the hypervisor $v (shadow paging on) with $(nproc) jobs"
    cp "$tree/debian/xen-kconfig" "$tree/xen/.config"
    tr ' ' '\n' <<<"$LAB_XEN_KCONFIG_OVERRIDES" >>"$tree/xen/.config"
    if ! lab_quiet make -C "$tree/xen" olddefconfig || ! lab_quiet make -j"$(nproc)" -C "$tree/xen"; then
      lab_log "hypervisor build of $v failed"; continue
    fi
    local o
    for o in $LAB_XEN_KCONFIG_OVERRIDES; do
      case $o in
        *=y) grep -qx "${o}" "$tree/xen/.config" ;;
        *=n) ! grep -qx "${o%=n}=y" "$tree/xen/.config" ;;
      esac || { lab_log "kconfig override $o did not stick"; continue 2; }
    done
    mkdir -p "$out.tmp"
    cp "$tree/xen/xen" "$out.tmp/xen"
    cp "$tree/xen/.config" "$out.tmp/config"
    echo "xen $v from source, overrides: $LAB_XEN_KCONFIG_OVERRIDES" >"$out.tmp/origin"
    rm -rf "$out"; mv "$out.tmp" "$out"
    rm -rf "$src" "$src.log"   # the source tree is large; the image is what we keep
    lab_log "hypervisor built in $(( $(date +%s) - t0 )) s"
    echo "$out/xen"; return 0
  done
  return 1
}

# lab_xen_binary -> a packaged hypervisor with shadow paging (pinned point release first).
lab_xen_binary() {
  local spec root ver out
  for spec in "$LAB_XEN_PINNED_BINARY" xen-hypervisor-4.17-amd64; do
    ver=$(lab_pkg_version "$spec") || continue
    out=$LAB_CACHE/xen-bin/$ver/xen
    if [ -s "$out" ]; then echo "$out"; return 0; fi
    root=$(lab_pkg_root xen-hyp "xen-hypervisor-4.17-amd64=$ver" 2>/dev/null) || continue
    if ! grep -qx 'CONFIG_SHADOW_PAGING=y' "$root"/boot/xen-*.config 2>/dev/null; then
      lab_log "xen-hypervisor $ver has no shadow paging: not usable for log-dirty"; continue
    fi
    mkdir -p "$(dirname "$out")"
    zcat "$root"/boot/xen-4.17-amd64.gz >"$out.tmp" && mv "$out.tmp" "$out" || continue
    echo "xen $ver Debian binary package" >"$(dirname "$out")/origin"
    echo "$out"; return 0
  done
  return 1
}

lab_xen_image() {
  local mode=${1:-auto} img=""
  case $mode in
    auto)   img=$(lab_xen_cached_build) || img=$(lab_xen_build_source) || img=$(lab_xen_binary) ;;
    source) img=$(lab_xen_build_source) ;;
    binary) img=$(lab_xen_binary) ;;
    /*|./*) img=$mode; [ -s "$img" ] || img="" ;;
    *) lab_die "unknown --xen mode '$mode' (auto|source|binary|PATH)" ;;
  esac
  [ -n "$img" ] || return 1
  LAB_XEN_IMAGE=$img
  LAB_XEN_ORIGIN=$(cat "$(dirname "$img")/origin" 2>/dev/null || echo "$img")
  # a gzip'd image (e.g. from /boot) must be unpacked for QEMU's multiboot loader
  if [ "$(head -c2 "$img" | od -An -tx1 | tr -d ' ')" = 1f8b ]; then
    mkdir -p "$LAB_CACHE/xen-user"
    zcat "$img" >"$LAB_CACHE/xen-user/xen" && LAB_XEN_IMAGE=$LAB_CACHE/xen-user/xen
  fi
  export LAB_XEN_IMAGE LAB_XEN_ORIGIN
}
