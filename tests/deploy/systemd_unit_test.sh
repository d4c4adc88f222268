#!/bin/bash
# deploy/systemd/evpipe.service checked by systemd's own tools (issue 15):
#   systemd-analyze verify        the unit parses, with no warning (unknown keys
#                                 are only warnings, so any output fails too);
#   systemd-analyze security      exposure score at most 2.5 (docs/operations.md).
# The unit names /usr/bin/evpipe; verify needs the binary to exist, so a copy
# points at the one just built. Usage: systemd_unit_test.sh UNIT EVPIPE_BINARY
set -euo pipefail
unit="$1" binary="$2"
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not found: apt-get install systemd"; exit 1; }
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
sed "s|/usr/bin/evpipe|$binary|g" "$unit" >"$dir/evpipe.service"
out="$(systemd-analyze verify "$dir/evpipe.service" 2>&1)" || { echo "verify failed: $out"; exit 1; }
[ -z "$out" ] || { echo "verify warned: $out"; exit 1; }
# --threshold is in tenths: 25 is an exposure of 2.5.
if ! systemd-analyze security --offline=yes --threshold=25 "$dir/evpipe.service" >"$dir/security.txt" 2>&1; then
  cat "$dir/security.txt"; echo "exposure above 2.5"; exit 1
fi
tail -1 "$dir/security.txt"
