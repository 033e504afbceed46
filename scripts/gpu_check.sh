#!/usr/bin/env bash
# Run the unit tests and execute every notebook with COURSE_DEVICE=cuda, printing how long each took.
# Usage (on a machine with a CUDA GPU, after `make setup`): bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
JUPYTER=${JUPYTER:-.venv/bin/jupyter}
export COURSE_DEVICE=cuda
"$PY" - <<'PYEOF' || { echo "no CUDA device: nothing to check"; exit 1; }
import torch
assert torch.cuda.is_available()
print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))
PYEOF
elapsed() { python3 -c "import sys,time; print(round((time.time_ns()-int(sys.argv[1]))/1e9,1))" "$1"; }
status=0
start=$(date +%s%N)
"$PY" -m pytest tests -q -m "not browser" || status=1
printf 'unit tests on cuda: %.1f s\n' "$(elapsed "$start")"
tmp=$(mktemp -d)
for nb in notebooks/18_1*.ipynb notebooks/18_2*.ipynb notebooks/solutions/18_3_exercise.ipynb notebooks/18_4_scaling_up.ipynb; do
  [ -f "$nb" ] || continue
  start=$(date +%s%N)
  if "$JUPYTER" nbconvert --to notebook --execute --output-dir "$tmp" "$nb" >/dev/null 2>"$tmp/err.txt"; then
    printf '%-45s ok    %6.1f s\n' "$nb" "$(elapsed "$start")"
  else
    printf '%-45s FAIL  %6.1f s\n' "$nb" "$(elapsed "$start")"; tail -20 "$tmp/err.txt"; status=1
  fi
done
start=$(date +%s%N)
"$PY" -m course_lib.compare --no-progress --out "$tmp/compare" || status=1
printf 'compare (default run) on cuda: %.1f s\n' "$(elapsed "$start")"
exit $status
