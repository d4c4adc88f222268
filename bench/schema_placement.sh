#!/usr/bin/env bash
# Issue 13's clock ratio (BM_SchemaCostRatio: envelope + schema over
# envelope only) over several placements of the same code. The ratio moves
# with where the linker puts the libraries' code (docs/schemas.md,
# "Placement"), so one binary's figure is one draw: this builds
# bench/schema_bench with the code after it moved by 0, 512, ... bytes
# (EVPIPE_BENCH_CODE_PAD), runs each placement in turn, the whole sequence
# --rounds times, and prints each figure and the median over placements.
# With --against REV it also builds REV (a git worktree at DIR-against.src,
# its own tree DIR-against, next to the --tree DIR) and runs the two builds
# alternately, placement by placement, so both see the same minutes.
# Usage: bench/schema_placement.sh [--tree DIR] [--pads "0 512 ..."] [--rounds N] [--against REV]
# The tree (default build-placement/, a Release tree of its own) is
# configured once; each placement then recompiles one file and relinks.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tree="$root/build-placement"
pads="0 512 1024 1536 2048 2560 3072 3584"
rounds=2
against=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tree) tree="$2"; shift 2 ;;
    --pads) pads="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --against) against="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
out=$(mktemp -d)
# At a fixed place, so that the REV's tree, kept between runs, finds its
# source where its CMakeCache.txt says it is.
against_src="$tree-against.src"
cleanup() {
  [ -z "$against" ] || git -C "$root" worktree remove --force "$against_src" >/dev/null 2>&1 || true
  rm -rf "$out"
}
trap cleanup EXIT

# build SOURCE TREE NAME: the placements of one source tree into $out/NAME/.
build() {
  local src=$1 dir=$2 name=$3 gen=()
  mkdir -p "$out/$name"
  [ -f "$dir/CMakeCache.txt" ] || gen=(-G Ninja)
  for pad in $pads; do
    printf '%s building %s, placement +%s bytes\n' "$(date +%H:%M:%S)" "$name" "$pad" >&2
    cmake -S "$src" -B "$dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DEVPIPE_WHITE_BOX_TESTS=OFF \
      -DEVPIPE_BENCH_CODE_PAD="$pad" >/dev/null
    gen=()
    cmake --build "$dir" --target schema_bench -j "$(nproc)" >"$out/build.log" 2>&1 ||
      { tail -20 "$out/build.log" >&2; exit 1; }
    cp "$dir/bench/schema_bench" "$out/$name/schema_bench.$pad"
  done
}
builds=(this)
build "$root" "$tree" this
if [ -n "$against" ]; then
  rev=$(git -C "$root" rev-parse --short --verify "$against^{commit}") || { echo "error: $against is no commit" >&2; exit 2; }
  git -C "$root" worktree remove --force "$against_src" >/dev/null 2>&1 || rm -rf "$against_src"
  git -C "$root" worktree prune
  git -C "$root" worktree add --detach "$against_src" "$rev" >/dev/null
  # A tree configured from another source directory is configured afresh.
  if [ -f "$tree-against/CMakeCache.txt" ] &&
    ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$against_src" "$tree-against/CMakeCache.txt"; then
    rm -rf "$tree-against"
  fi
  build "$against_src" "$tree-against" "$rev"
  builds=("$rev" this)
fi

printf '%-6s %-8s %-6s %12s %12s %12s\n' round build pad envelope_ns schema_ns block_ratio
for r in $(seq "$rounds"); do
  for pad in $pads; do
    for b in "${builds[@]}"; do
      line=$("$out/$b/schema_bench.$pad" --benchmark_filter=BM_SchemaCostRatio --benchmark_repetitions=5 \
        --benchmark_report_aggregates_only=true --benchmark_min_time=0.5 2>/dev/null | grep '^BM_SchemaCostRatio_median')
      get() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$line"; }
      printf '%-6s %-8s %-6s %12s %12s %12s\n' "$r" "$b" "$pad" "$(get envelope_ns)" "$(get schema_ns)" \
        "$(get block_ratio_median)" | tee -a "$out/rows"
    done
  done
done
for b in "${builds[@]}"; do
  awk -v b="$b" '$2 == b { print $6 }' "$out/rows" | sort -n |
    awk -v b="$b" '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
          printf "%s: block ratio over %d runs: min %s, median %.3f, max %s\n", b, NR, v[1], m, v[NR] }'
done
