# Two commands do all set-up on a fresh machine (see README.md):
#   make run    the embedded default job: the demo that trains a tiny DeepSeek-VL through
#               the paper's recipe on built-in data and evaluates it (minutes, CPU)
#   make test   the whole test suite (parity against transformers included)
# Each creates/updates the local virtual environment .venv first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/demo.py
WORKDIR ?= workdir/demo

.PHONY: run test bench clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.test: requirements.txt requirements-test.txt $(VENV)/.runtime
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

run: $(VENV)/.runtime
	$(PY) -m dsvl_jax.main --config=$(CONFIG) --workdir=$(WORKDIR)

test: $(VENV)/.test
	$(PY) -m pytest tests

bench: $(VENV)/.test
	$(PY) experiments/bench_compile.py

clean:
	rm -rf $(VENV)
