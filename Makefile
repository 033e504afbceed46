# Chapter 18, RRHF and IPO. `make lab` opens the course; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NBVAL  := --nbval --nbval-current-env --nbval-cell-timeout=600
# Two pytest-xdist workers (the machine has 2 cores); loadfile keeps each test file, and so each notebook
# (one kernel), in one worker. Every run has one thread, so that two workers do not fight over the cores.
XDIST  := -n 2 --dist loadfile
ONE_THREAD := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

.PHONY: setup lab lint test notebooks-perturbed notebooks-other-seed calibrate unit notebooks student execute-notebooks data benchmarks clean

## setup: create or update .venv and install the course (idempotent)
setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

## lab: open the chapter in JupyterLab
lab: setup
	$(BIN)/jupyter lab notebooks/

## lint: ruff's checks and its formatter, over the library, tests, benchmarks and scripts (config in pyproject.toml)
LINTED := course_lib tests benchmarks scripts
lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

## test: unit tests and strict nbval over every notebook in notebooks/ (and the browser test), then the
## notebooks again, both passes at once: strictly under other floating-point rounding, and under another
## seed (asserts and claims only). The stored outputs come from the CPU with COURSE_SEED=0.
## The notebooks come first, so that the longest files start first and the short ones fill the gaps.
## -rs lists every skipped test with its reason (the browser test without chromium says how to get it).
test: setup
	$(ONE_THREAD) COURSE_SEED=0 COURSE_DEVICE=$${COURSE_DEVICE:-cpu} $(BIN)/python -m pytest notebooks tests \
	  $(NBVAL) $(XDIST) -q -rs
	$(MAKE) --no-print-directory -j2 --output-sync=target notebooks-perturbed notebooks-other-seed

## notebooks-perturbed: strict nbval with other rounding: ATen's portable kernels (no SIMD), one thread
notebooks-perturbed: setup
	$(ONE_THREAD) COURSE_SEED=0 COURSE_DEVICE=cpu ATEN_CPU_CAPABILITY=default \
	  $(BIN)/python -m pytest notebooks $(NBVAL) $(XDIST) -q

## notebooks-other-seed: every notebook's asserts and claims under COURSE_SEED=1 (figures differ: nbval-lax)
notebooks-other-seed: setup
	$(ONE_THREAD) COURSE_SEED=1 COURSE_DEVICE=cpu $(BIN)/python -m pytest notebooks --nbval-lax --nbval-current-env \
	  --nbval-cell-timeout=600 $(XDIST) -q

## calibrate: run every notebook over 16 draws (seeds 0-7, each under the native and the portable rounding),
## two at a time, and write each claim's mean, spread and z to notebooks/CLAIMS.md (z >= 4 is the rule).
## One notebook only: .venv/bin/python scripts/calibrate_claims.py --notebooks notebooks/18_2_ipo.ipynb
calibrate: setup
	$(BIN)/python scripts/calibrate_claims.py --seeds 0 1 2 3 4 5 6 7 --roundings native portable --jobs 2

## unit: the tests in tests/ alone, two workers
unit: setup
	$(ONE_THREAD) $(BIN)/python -m pytest tests $(XDIST) -q -rs

notebooks: setup
	$(ONE_THREAD) COURSE_SEED=0 COURSE_DEVICE=cpu $(BIN)/python -m pytest notebooks $(NBVAL) $(XDIST) -q

## student: regenerate notebooks/18_3_exercise.ipynb from the solution
student: setup
	$(BIN)/python scripts/make_student.py

## execute-notebooks: re-execute every chapter notebook in a fresh kernel on the CPU, seed 0 (stores outputs)
execute-notebooks: setup
	cd notebooks && for nb in 18_*.ipynb solutions/18_*.ipynb; do \
	  case $$nb in 18_3_exercise.ipynb) continue;; esac; \
	  COURSE_SEED=0 COURSE_DEVICE=cpu ../$(BIN)/jupyter nbconvert --to notebook --execute --inplace $$nb || exit 1; done
	$(MAKE) student

## data: rebuild data/ from its seed
data: setup
	$(BIN)/python -m course_lib.build_data --out data

benchmarks: setup
	$(BIN)/python benchmarks/bench_logprobs.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_notebooks_load.py

clean:
	rm -rf $(VENV)
