#!/usr/bin/env bash
# Instruction counts (callgrind Ir) per event: envelope-only vs envelope +
# payload schema (bench/schema_callgrind.cc), and their ratio. Deterministic,
# unlike wall-clock medians on a shared machine.
# Usage: bench/schema_callgrind.sh [build dir, default build] [events, default 20000]
set -euo pipefail
build=${1:-build}
events=${2:-20000}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file="$out/cg.%p" \
  "$build/bench/schema_callgrind" "$events" >/dev/null 2>"$out/log" || { cat "$out/log"; exit 1; }
declare -A ir
for f in "$out"/cg.*; do
  name=$(sed -n 's/^desc: Trigger: Client Request: //p' "$f")
  [ -n "$name" ] || continue
  total=$(sed -n 's/^totals: \([0-9]*\).*/\1/p' "$f")
  ir[$name]=$total
  printf '%-22s %10.1f Ir/event\n' "$name" "$(echo "$total / $events" | bc -l)"
done
printf 'ratio (with schema / envelope-only): %.3f\n' "$(echo "${ir[envelope_and_schema]} / ${ir[envelope_only]}" | bc -l)"
