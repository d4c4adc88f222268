#!/usr/bin/env bash
# A ThreadSanitizer pass, run by hand (not by scripts/test.sh, whose time
# budget a third build tree would take): builds build-tsan (clang,
# -fsanitize=thread), runs its unit and in-process tests, then every
# black-box test of the Release tree against its evpipe and evpipe-load, on a
# private PostgreSQL in a scratch directory as scripts/test.sh does. Any
# ThreadSanitizer report fails the pass, but for those scripts/tsan.supp
# names (each with its reason).
#   scripts/tsan.sh                 everything (about 15 minutes on 2 cores)
#   scripts/tsan.sh -R '^Stream'    ctest arguments are passed to both runs
set -euo pipefail
source "$(dirname "$0")/lib.sh"

case "${1:-}" in
  -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

ensure_packages
# The Release tree as scripts/test.sh configures it (daemon, tools, black-box tests).
build_evpipe Release "$EVPIPE_ROOT/build" -DEVPIPE_WHITE_BOX_TESTS=OFF
release_dir="$EVPIPE_BUILD_DIR"
tsan_dir="$EVPIPE_ROOT/build-tsan"
grep -qs 'CMAKE_CXX_COMPILER:.*clang' "$tsan_dir/CMakeCache.txt" || rm -rf "$tsan_dir"  # a tree configured with GCC
CC=clang CXX=clang++ build_evpipe Debug "$tsan_dir" -DEVPIPE_USE_MIMALLOC=OFF -DEVPIPE_BUILD_BENCH=OFF \
  -DEVPIPE_BLACK_BOX_TESTS=OFF -DCMAKE_CXX_FLAGS="-fsanitize=thread" -DCMAKE_CXX_FLAGS_DEBUG="-O1 -gline-tables-only" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread"

scratch_cluster
export EVPIPE_TEST_DSN="$EVPIPE_DSN" EVPIPE_REQUIRE_DB=1 TMPDIR="$scratch"
export EVPIPE_TEST_MOSQUITTO=/usr/sbin/mosquitto
mkdir -p "$scratch/tsan"
export TSAN_OPTIONS="log_path=$scratch/tsan/report suppressions=$EVPIPE_ROOT/scripts/tsan.supp second_deadlock_stack=1"
# Left out: tests that count what ThreadSanitizer itself changes (page
# faults of first touches, an idle process's wake-ups: it runs a thread of
# its own).
skip='^(DedupWindow\.TheFirstInsertsTakeNoPageFaults|Operations\.AnIdleEvpipeWithTheStreamOnUsesNoCpu)$'
failed=""
log "running the unit and in-process tests (ThreadSanitizer)"
(cd "$tsan_dir" && ctest --output-on-failure -j "$(nproc)" -LE fuzz -E "$skip" "$@") ||
  failed="tests failed under ThreadSanitizer (above)"
log "running the black-box tests against the ThreadSanitizer evpipe"
(cd "$release_dir" &&
   EVPIPE_TEST_EVPIPE="$tsan_dir/app/evpipe" EVPIPE_TEST_EVPIPE_LOAD="$tsan_dir/load/evpipe-load" \
   ctest --output-on-failure -j "$(nproc)" -L black_box -E "$skip" "$@") ||
  failed="${failed:+$failed; }black-box tests against the ThreadSanitizer evpipe failed (above)"
# Every process (tests, evpipe, evpipe-load) writes its reports to a file of
# its own there; they are kept in build-tsan/reports (the scratch directory
# goes when this script ends).
rm -rf "$tsan_dir/reports"
if compgen -G "$scratch/tsan/report.*" >/dev/null; then
  cp -r "$scratch/tsan" "$tsan_dir/reports"
  head -60 "$scratch"/tsan/report.* >&2
  die "ThreadSanitizer reported $(cat "$scratch"/tsan/report.* | grep -c '^WARNING: ThreadSanitizer') problem(s) (above; all of them in $tsan_dir/reports; ${failed:-no test failed})"
fi
[ -z "$failed" ] || die "$failed"
log "ThreadSanitizer: no report"
