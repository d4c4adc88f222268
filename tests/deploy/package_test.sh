#!/bin/bash
# The Debian package (issue 15, cmake/evpipe_package.cmake): build it with
# `cpack -G DEB`, run lintian (errors fail; the remaining warnings are
# explained in docs/operations.md), then, as root, install it with apt-get,
# check what it promises, and purge it.
# Usage: package_test.sh BUILD_DIR. Exit 77 (ctest: skipped) when not root or
# when an evpipe package is already installed (a real one is never replaced).
set -euo pipefail
build="$1"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cpack -G DEB -B "$out" --config "$build/CPackConfig.cmake" >"$out/cpack.log" 2>&1 || { cat "$out/cpack.log"; exit 1; }
deb="$(ls "$out"/evpipe_*_amd64.deb)"
echo "built $(basename "$deb")"

if command -v lintian >/dev/null; then
  lintian --tag-display-limit 0 "$deb" 2>&1 | grep -v 'root privileges' | tee "$out/lintian.txt" || true
  if grep -q '^E:' "$out/lintian.txt"; then echo "lintian reports errors"; exit 1; fi
else
  echo "lintian not found: apt-get install lintian"; exit 1
fi

if [ "$(id -u)" -ne 0 ]; then echo "SKIPPED install: not root (apt-get install needs root)"; exit 77; fi
if dpkg-query -W -f='${Status}' evpipe 2>/dev/null | grep -q 'ok installed'; then
  echo "SKIPPED install: an evpipe package is already installed here; not replacing it"; exit 77
fi
export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=300 -y -qq "$@"; }
trap 'apt_get purge evpipe >/dev/null 2>&1 || true; rm -rf "$out"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# apt-get, not dpkg -i: the Depends computed by shlibdeps must resolve.
apt_get install --no-install-recommends "$deb" >"$out/install.log" 2>&1 || { cat "$out/install.log"; fail "install"; }
/usr/bin/evpipe --version || fail "evpipe --version"
/usr/bin/evpipe --version | grep -q '^evpipe [0-9]' || fail "--version has no release line"
# The shipped build links mimalloc and keeps freed memory 10 s (app/main.cc);
# the allocator's own environment variable still decides.
/usr/bin/evpipe --version | grep -q '^allocator: mimalloc, freed memory kept 10000 ms (MIMALLOC_DECOMMIT_DELAY), ' ||
  fail "--version: no mimalloc with freed memory kept 10000 ms"
MIMALLOC_DECOMMIT_DELAY=25 /usr/bin/evpipe --version | grep -q 'freed memory kept 25 ms' ||
  fail "MIMALLOC_DECOMMIT_DELAY=25 did not decide"
# Transparent huge pages: asked for where the kernel's mode allows them and
# the host has no hugetlb pool (app/huge_pages.h); the environment decides.
thp_mode=$(sed -n 's/.*\[\(.*\)\].*/\1/p' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || true)
pool=$(awk '/^HugePages_Total:/ {print $2}' /proc/meminfo)
if { [ "$thp_mode" = madvise ] || [ "$thp_mode" = always ]; } && [ "${pool:-0}" = 0 ]; then
  /usr/bin/evpipe --version | grep -q "transparent huge pages on: the kernel's mode is '$thp_mode'" ||
    fail "--version: huge pages not on with the kernel's mode '$thp_mode' and no hugetlb pool"
else
  /usr/bin/evpipe --version | grep -q 'transparent huge pages off: ' ||
    fail "--version: huge pages not off with the kernel's mode '$thp_mode' and HugePages_Total ${pool:-?}"
fi
MIMALLOC_LARGE_OS_PAGES=0 /usr/bin/evpipe --version | grep -q 'transparent huge pages off: MIMALLOC_LARGE_OS_PAGES in the environment' ||
  fail "MIMALLOC_LARGE_OS_PAGES=0 did not decide"
# mimalloc reads its variables without regard to case, and so does evpipe's check.
env mimalloc_large_os_pages=0 /usr/bin/evpipe --version | grep -q 'transparent huge pages off: MIMALLOC_LARGE_OS_PAGES in the environment' ||
  fail "mimalloc_large_os_pages=0 did not decide"
getent passwd evpipe >/dev/null || fail "postinst did not create the evpipe user"
[ "$(stat -c '%U:%G %a' /etc/evpipe/evpipe.toml)" = "root:evpipe 640" ] ||
  fail "/etc/evpipe/evpipe.toml is $(stat -c '%U:%G %a' /etc/evpipe/evpipe.toml), not root:evpipe 640"
dpkg-query -W -f='${Conffiles}\n' evpipe | grep -q '/etc/evpipe/evpipe.toml' || fail "evpipe.toml is not a conffile"
# The service user can read its config, as the unit's ExecStartPre does.
runuser -u evpipe -- /usr/bin/evpipe check-config --config /etc/evpipe/evpipe.toml >/dev/null ||
  fail "evpipe check-config --config /etc/evpipe/evpipe.toml (as user evpipe)"
/usr/bin/evpipe check-config --config /etc/evpipe/evpipe.toml >/dev/null || fail "check-config as root"
[ -f /usr/share/evpipe/deploy/grafana/evpipe.json ] || fail "deploy/ not installed"
systemd-analyze verify /lib/systemd/system/evpipe.service || fail "installed unit does not verify"

apt_get purge evpipe >"$out/purge.log" 2>&1 || { cat "$out/purge.log"; fail "purge"; }
[ ! -e /usr/bin/evpipe ] || fail "/usr/bin/evpipe left after purge"
[ ! -e /etc/evpipe ] || fail "/etc/evpipe left after purge"
echo "installed, checked and purged $(basename "$deb")"
