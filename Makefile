# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs vlmtune into it (torch pinned to the CPU 2.13.0 wheel,
# everything else pinned by constraints.txt, the versions the test suite ran with).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean bench

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/vlmtune demo --out demo_out

test: $(STAMP)
	$(BIN)/python -m pytest tests

bench: $(STAMP)
	$(BIN)/python bench/bench_train.py

clean:
	rm -rf $(VENV) demo_out
