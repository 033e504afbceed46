# Chapter 18, RRHF and IPO. `make lab` opens the course; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NBVAL  := --nbval --nbval-current-env --nbval-cell-timeout=600

.PHONY: setup lab lint test unit notebooks student execute-notebooks data benchmarks clean

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

## test: unit tests, then strict nbval over every notebook in notebooks/ (and the browser test).
## The stored outputs come from the CPU, so the tests run there unless COURSE_DEVICE says otherwise.
test: setup
	COURSE_DEVICE=$${COURSE_DEVICE:-cpu} $(BIN)/python -m pytest tests notebooks $(NBVAL) -q

unit: setup
	$(BIN)/python -m pytest tests -q

notebooks: setup
	$(BIN)/python -m pytest notebooks $(NBVAL) -q

## student: regenerate notebooks/18_3_exercise.ipynb from the solution
student: setup
	$(BIN)/python scripts/make_student.py

## execute-notebooks: re-execute every chapter notebook in a fresh kernel (stores outputs)
execute-notebooks: setup
	cd notebooks && for nb in 18_*.ipynb solutions/18_*.ipynb; do \
	  case $$nb in 18_3_exercise.ipynb) continue;; esac; \
	  ../$(BIN)/jupyter nbconvert --to notebook --execute --inplace $$nb || exit 1; done
	$(MAKE) student

## data: rebuild data/ from its seed
data: setup
	$(BIN)/python -m course_lib.build_data --out data

benchmarks: setup
	$(BIN)/python benchmarks/bench_logprobs.py
	$(BIN)/python benchmarks/bench_training.py

clean:
	rm -rf $(VENV)
