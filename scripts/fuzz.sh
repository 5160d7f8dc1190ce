#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) and fuzzes them one after another.
#   scripts/fuzz.sh                  every target for 60 s
#   scripts/fuzz.sh 600              every target for 10 minutes
#   scripts/fuzz.sh 300 fuzz_decode  one target ("decode" works too)
# Targets are tests/fuzz/fuzz_*.c. Each runs on a writable corpus in
# build-fuzz/corpus/<target>, seeded from the committed tests/fuzz/corpus/<target>
# (new inputs stay in build-fuzz; copy the ones worth keeping by hand), with the
# dictionary tests/fuzz/<target>.dict or the one its source names in a
# "dictionary: NAME" comment. Crash, leak, timeout and OOM inputs go to
# build-fuzz/artifacts/<target>/, logs to build-fuzz/logs/<target>.log.
# Exits 1 if any target found something (the artifact paths are printed), 2 on
# usage errors. Extra libFuzzer flags: FUZZ_FLAGS="-jobs=2 -workers=2" scripts/fuzz.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-fuzz}
FUZZ_DIR=$ROOT/tests/fuzz

seconds=60
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
fi
all=()
for src in "$FUZZ_DIR"/fuzz_*.c; do
  [[ -e $src ]] && all+=("$(basename "$src" .c)")
done
if (( ${#all[@]} == 0 )); then
  echo "fuzz.sh: no targets in $FUZZ_DIR" >&2
  exit 2
fi
targets=()
for t in "$@"; do
  [[ $t == fuzz_* ]] || t=fuzz_$t
  if [[ ! -f $FUZZ_DIR/$t.c ]]; then
    echo "fuzz.sh: unknown target '$t' (have: ${all[*]})" >&2
    exit 2
  fi
  targets+=("$t")
done
(( ${#targets[@]} )) || targets=("${all[@]}")

LUAHOOK_SETUP_EXTRA="clang libclang-rt-14-dev" "$ROOT/scripts/setup.sh"
# Same configuration as `scripts/test.sh --fuzz`, so the two share build-fuzz/.
echo "fuzz.sh: building in $BUILD_DIR"
CC=clang BUILD_DIR=$BUILD_DIR "$ROOT/scripts/build.sh" -DLUAHOOK_FUZZ=ON -DLUAHOOK_SANITIZE=ON

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
for t in "${targets[@]}"; do
  bin=$BUILD_DIR/tests/$t
  if [[ ! -x $bin ]]; then
    echo "fuzz.sh: $bin was not built" >&2
    exit 2
  fi
  corpus=$BUILD_DIR/corpus/$t
  artifacts=$BUILD_DIR/artifacts/$t
  log=$BUILD_DIR/logs/$t.log
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  if [[ -d $FUZZ_DIR/corpus/$t ]]; then
    cp -n "$FUZZ_DIR/corpus/$t"/* "$corpus"/ 2>/dev/null || true
  fi
  flags=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1
         -artifact_prefix="$artifacts/")
  dict=$FUZZ_DIR/$t.dict
  if [[ ! -f $dict ]]; then
    name=$(sed -n 's/.*dictionary: *\([A-Za-z0-9_.-]*\.dict\).*/\1/p' "$FUZZ_DIR/$t.c" | head -n1)
    dict=${name:+$FUZZ_DIR/$name}
  fi
  [[ -n $dict && -f $dict ]] && flags+=(-dict="$dict")
  read -r -a extra <<< "${FUZZ_FLAGS:-}"
  echo "fuzz.sh: $t for ${seconds}s (corpus $corpus, log $log)"
  before=$(find "$artifacts" -type f | wc -l)
  rc=0
  "$bin" "${flags[@]}" "${extra[@]}" "$corpus" >"$log" 2>&1 || rc=$?
  stats=$( (grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE|INITED)' "$log" || true) | tail -n1 |
           sed 's/ *MS:.*//; s/ *L: [0-9/]*//')
  echo "fuzz.sh: $t: exit $rc; ${stats:-no progress line}"
  after=$(find "$artifacts" -type f | wc -l)
  if (( rc != 0 || after > before )); then
    failed+=("$t")
    (grep -E '^(==[0-9]+==ERROR|SUMMARY|fuzz_[a-z]+: )' "$log" || true) | head -n5 | sed 's/^/    /'
    units=$(grep -o "Test unit written to .*" "$log" | sed 's/^Test unit written to //' || true)
    for u in $units; do echo "    crash file: $u"; done
    [[ -n $units ]] || echo "    no crash file named in the log: see $log and $artifacts/"
  fi
done

if (( ${#failed[@]} )); then
  echo "fuzz.sh: FOUND PROBLEMS in: ${failed[*]}" >&2
  echo "fuzz.sh: reproduce with: $BUILD_DIR/tests/<target> <crash file>" >&2
  exit 1
fi
echo "fuzz.sh: no findings (${targets[*]}, ${seconds}s each)"
