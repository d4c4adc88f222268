#!/usr/bin/env bash
# Runs every test: installs missing Debian packages, builds, starts a private
# PostgreSQL on a loopback port in a scratch directory, runs ctest, stops it.
#   scripts/test.sh                 all tests
#   scripts/test.sh -L unit         ctest arguments are passed through
set -euo pipefail
source "$(dirname "$0")/lib.sh"

case "${1:-}" in
  -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

ensure_packages
build_evpipe Release

scratch_cluster

export EVPIPE_TEST_DSN="$EVPIPE_DSN"
export EVPIPE_REQUIRE_DB=1      # integration tests fail, not skip, without a database
export TMPDIR="$scratch"
log "running tests"
cd "$EVPIPE_BUILD_DIR"
ctest --output-on-failure --timeout 300 -j "$(nproc)" "$@"
