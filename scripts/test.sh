#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite with ctest.
#   scripts/test.sh            release build (build/)
#   scripts/test.sh --asan     also the same suite on an ASan+UBSan build (build-asan/)
#   scripts/test.sh --fuzz     also the fuzz targets for a short smoke time (clang)
# Extra ctest arguments: CTEST_ARGS="-R e2e" scripts/test.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
asan=0; fuzz=0
for a in "$@"; do
  case "$a" in
    --asan) asan=1 ;;
    --fuzz) fuzz=1 ;;
    *) echo "test.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
extra=""
(( fuzz )) && extra="clang libclang-rt-14-dev"
LUAHOOK_SETUP_EXTRA="$extra" "$ROOT/scripts/setup.sh"

# npm packages for the interop and e2e tests, from the committed lockfile
if [[ -f "$ROOT/tests/package-lock.json" ]]; then
  if [[ ! -d "$ROOT/tests/node_modules" || "$ROOT/tests/package-lock.json" -nt "$ROOT/tests/node_modules/.package-lock.json" ]]; then
    (cd "$ROOT/tests" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi

run_suite() {
  local dir=$1; shift
  BUILD_DIR=$dir "$ROOT/scripts/build.sh" "$@"
  (cd "$dir" && ctest --output-on-failure -j2 ${CTEST_ARGS:-})
}

run_suite "$ROOT/build"
if (( asan )); then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite "$ROOT/build-asan" -DLUAHOOK_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
fi
if (( fuzz )); then # the fuzz targets only: the suite itself ran above
  CC=clang CTEST_ARGS="-R ^fuzz\\." run_suite "$ROOT/build-fuzz" -DLUAHOOK_FUZZ=ON -DLUAHOOK_SANITIZE=ON
fi
