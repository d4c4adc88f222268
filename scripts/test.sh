#!/usr/bin/env bash
# Runs every test: installs missing Debian packages, builds a Release tree and
# an AddressSanitizer + UndefinedBehaviorSanitizer tree (clang), starts a
# private PostgreSQL on a loopback port in a scratch directory, runs the tests
# of what ships (the package, the unit file) and a smoke set against the
# Release evpipe, the unit and in-process tests in the sanitizer tree and
# every black-box test (they drive the evpipe binary) against its evpipe,
# fuzzes each libFuzzer target for a minute beside them, stops PostgreSQL.
# The MQTT tests start Mosquitto brokers of their own on loopback in the same
# directory. Without the sanitizer tree, the Release tree runs every test.
#   scripts/test.sh                        everything
#   scripts/test.sh -L unit                ctest arguments are passed through
#   EVPIPE_SANITIZERS=0 scripts/test.sh    skip the sanitizer build (and fuzzing)
#   EVPIPE_FUZZ_SECONDS=0 scripts/test.sh  skip fuzzing (default 60 s a target)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

case "${1:-}" in
  -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

ensure_packages
sanitizers="${EVPIPE_SANITIZERS:-1}"
fuzz_seconds="${EVPIPE_FUZZ_SECONDS:-60}"
# With the sanitizer tree, the tests that link evpipe's libraries (unit and
# in-process integration tests) are built and run there only; the Release
# tree builds the daemon, the tools and the black-box tests, which run against
# the sanitized evpipe (and a smoke set against the Release one, below).
white_box=ON
[ "$sanitizers" != 0 ] && white_box=OFF
build_evpipe Release "$EVPIPE_ROOT/build" -DEVPIPE_WHITE_BOX_TESTS="$white_box"
release_dir="$EVPIPE_BUILD_DIR"
if [ "$sanitizers" != 0 ]; then
  # clang, not GCC: with ASan + UBSan at -O0 it compiles this code base about
  # twice as fast (the sanitizer build was the largest part of CI's time), and
  # the Release tree keeps GCC, so both compilers build every test. clang 14
  # cannot emit -fsanitize=function for coroutines ("Cannot represent a
  # difference across sections"); GCC has no such check either. Line tables
  # are all the sanitizers' stack traces need. The black-box integration tests
  # (label black_box: they only drive the evpipe binary) are not built here:
  # the Release tree's run the sanitized evpipe below. The fuzz targets are
  # (EVPIPE_FUZZ), so no third tree is built.
  #
  # It builds at the lowest CPU priority while the Release tests run, so that
  # it does not slow them.
  san="-fsanitize=address,undefined -fno-sanitize=function -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
  grep -qs 'CMAKE_CXX_COMPILER:.*clang' "$EVPIPE_ROOT/build-sanitize/CMakeCache.txt" ||
    rm -rf "$EVPIPE_ROOT/build-sanitize"   # a tree configured with GCC before
  ( renice -n 19 -p "$BASHPID" >/dev/null
    CC=clang CXX=clang++ build_evpipe Debug "$EVPIPE_ROOT/build-sanitize" -DEVPIPE_USE_MIMALLOC=OFF \
      -DEVPIPE_BUILD_BENCH=OFF -DEVPIPE_BLACK_BOX_TESTS=OFF -DEVPIPE_FUZZ=ON -DEVPIPE_FUZZ_SECONDS="$fuzz_seconds" \
      -DCMAKE_CXX_FLAGS="$san" -DCMAKE_CXX_FLAGS_DEBUG="-O0 -gline-tables-only" \
      -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" ) &
  sanitizer_build=$!
fi
rm -rf "$EVPIPE_ROOT/build-fuzz"   # the fuzz tree of earlier versions of this script

scratch_cluster
export EVPIPE_TEST_DSN="$EVPIPE_DSN"
export EVPIPE_REQUIRE_DB=1      # integration tests fail, not skip, without a database
export TMPDIR="$scratch"
# MQTT tests run Debian's Mosquitto, one broker per test on a loopback port
# with its own config (tests/support/mqtt_peer.h): a test restarts its broker,
# and persistent sessions must not leak between tests.
export EVPIPE_TEST_MOSQUITTO=/usr/sbin/mosquitto
# The interop tests (ctest label interop) start RabbitMQ (Debian) and aedes
# (npm, installed here into the scratch directory like the Debian packages
# above; Debian's npm only where no npm came with nodejs). Without npm's
# registry the aedes tests skip with the reason; EVPIPE_REQUIRE_AEDES=1
# makes them fail instead.
command -v npm >/dev/null || (ensure_packages npm) || log "warning: npm could not be installed"
if timeout 300 npm install --prefix "$scratch/npm" --no-audit --no-fund --loglevel=error aedes@1.2.0 \
     >"$scratch/npm-install.log" 2>&1; then
  export EVPIPE_TEST_AEDES_MODULES="$scratch/npm/node_modules"
  log "aedes 1.2.0 installed with npm in $scratch/npm"
else
  log "warning: npm could not install aedes (the aedes interop tests will skip):"
  tail -5 "$scratch/npm-install.log" >&2
fi

# With the sanitizer tree, every black-box test runs once, against the
# sanitized evpipe (below), which checks what the Release one would and its
# memory and undefined behaviour besides: running the suite against both
# builds was a third of CI's time. The Release evpipe gets the tests of what
# ships (the package: built, installed and run; the systemd unit; the
# Prometheus files) and the TCP pipeline's black-box tests as a smoke test.
# Without the sanitizer tree, the Release tree runs every test.
log "running tests (Release)"
release_ok=1
ctest_release() { (cd "$release_dir" && ctest --output-on-failure --timeout 300 -j "$(nproc)" "$@"); }
if [ "$sanitizers" = 0 ]; then
  ctest_release "$@" || release_ok=0
else
  ctest_release -LE black_box "$@" || release_ok=0
  if [ $# -eq 0 ]; then ctest_release -L black_box -R '^TcpPipeline\.' || release_ok=0; fi
fi
if [ "$sanitizers" != 0 ]; then
  wait "$sanitizer_build" || die "the sanitizer build failed"
fi
[ "$release_ok" = 1 ] || die "Release tests failed (above)"
if [ "$sanitizers" != 0 ]; then
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1"
  # The fuzzers run beside the tests below, at the lowest CPU priority: they
  # take the CPU the tests leave idle, for a fixed time. In a process group of
  # their own, so that a failing test pass stops them too.
  fuzzing=""
  if [ "$fuzz_seconds" != 0 ] && [ $# -eq 0 ]; then
    log "fuzzing each target for $fuzz_seconds s (libFuzzer, ASan + UBSan), beside the tests"
    setsid bash -c 'renice -n 19 -p $$ >/dev/null; cd "$1" && exec ctest -L fuzz --output-on-failure -j "$2"' \
      fuzz "$EVPIPE_ROOT/build-sanitize" "$(nproc)" >"$scratch/fuzz.log" 2>&1 &
    fuzzing=$!
  fi
  tests_failed() { [ -z "$fuzzing" ] || kill -TERM -- "-$fuzzing" 2>/dev/null || true; die "$1"; }
  log "running tests (AddressSanitizer + UndefinedBehaviorSanitizer)"
  (cd "$EVPIPE_ROOT/build-sanitize" && ctest --output-on-failure --timeout 600 -j "$(nproc)" -LE fuzz "$@") ||
    tests_failed "sanitizer tests failed (above)"
  # One test more than cores: this pass waits more than it computes (on
  # commits, brokers, restarts); with one a core it left 13-44% of the CPU
  # idle (vmstat, 2 cores). The unit pass above does not: with twice as
  # many it took as long (140 s against 148) and each test twice as long.
  log "running the black-box tests against the sanitized evpipe"
  (cd "$release_dir" &&
     EVPIPE_TEST_EVPIPE="$EVPIPE_ROOT/build-sanitize/app/evpipe" \
     EVPIPE_TEST_EVPIPE_LOAD="$EVPIPE_ROOT/build-sanitize/load/evpipe-load" \
     ctest --output-on-failure --timeout 600 -j "$(( $(nproc) + 1 ))" -L black_box "$@") ||
    tests_failed "black-box tests against the sanitized evpipe failed (above)"
  # evpipe runs as a child of the integration tests: its reports land in its
  # logs. (The fuzzers' own log, still being written, is judged below.)
  sanitizer_report="ERROR: (Address|Leak)Sanitizer|runtime error:"
  if grep -rlE "$sanitizer_report" "$scratch" --include='*.log' --exclude=fuzz.log 2>/dev/null; then
    grep -rhE -A12 "$sanitizer_report" "$scratch" --include='*.log' --exclude=fuzz.log 2>/dev/null | head -80 >&2
    tests_failed "a sanitizer reported an error in an evpipe child process (above)"
  fi
  if [ -n "$fuzzing" ]; then
    fuzz_ok=1
    wait "$fuzzing" || fuzz_ok=0
    log "fuzzing:"
    cat "$scratch/fuzz.log" >&2
    [ "$fuzz_ok" = 1 ] || die "a fuzz target failed (above; its input is the crash-* file it names)"
    ! grep -qE "$sanitizer_report" "$scratch/fuzz.log" || die "a fuzz target reported a sanitizer error (above)"
  fi
fi
log "every test passed; the whole run took $SECONDS s"
