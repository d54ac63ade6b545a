#!/usr/bin/env bash
# Bounded fuzzing for CI (.ci/run calls this): each target for FUZZ_SECONDS (default 30) with
# atheris, starting from the committed corpus (tests/fuzz/corpus/TARGET, read only); new inputs
# go to a temp dir that is removed afterwards, never into the repository. Exit status non-zero
# on any finding (crash, timeout, out-of-memory: saved as tests/fuzz/crashes/TARGET-*) or if a
# target could not be fuzzed at all.
# The seed is fixed (FUZZ_SEED, default 1) so the gate replays the same mutation sequence on every
# machine: a CI failure is then a change in the code, not luck. Exploration belongs to long runs
# with a fresh seed (README.md, "Long runs"); what they find joins the corpus.
#   FUZZ_SECONDS=60 bash tests/fuzz/ci.sh        # longer
#   FUZZ_SEED=0 bash tests/fuzz/ci.sh            # a random seed: explore
#   bash tests/fuzz/ci.sh pnn input              # some targets only
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
SECS="${FUZZ_SECONDS:-30}"
SEED="${FUZZ_SEED:-1}"
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(pnn model input)

if ! "$PY" -c "import atheris" 2>/dev/null; then
  "$PY" -m pip install -q --disable-pip-version-check atheris
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
failed=()
for t in "${TARGETS[@]}"; do
  echo "--- fuzzing $t for ${SECS}s"
  if ! "$PY" -m tests.fuzz.harness "$t" --seconds "$SECS" --corpus "$TMP/$t" -seed="$SEED" \
      "tests/fuzz/corpus/$t" > "$TMP/$t.log" 2>&1; then
    failed+=("$t")
    # the finding's traceback and libFuzzer's report
    grep -v -E '^#[0-9]+ +(NEW|REDUCE|pulse)|^INFO: Instrumenting' "$TMP/$t.log" | tail -60
  fi
  grep -E '^harness summary' "$TMP/$t.log" || tail -20 "$TMP/$t.log"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found something in: ${failed[*]} (inputs under tests/fuzz/crashes/;" \
       "replay: python -m tests.fuzz.harness TARGET FILE)"
  exit 1
fi
echo "fuzzing: no findings in ${TARGETS[*]} (${SECS}s each)"
