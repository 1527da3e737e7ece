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

$(VENV)/.runtime: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e . --no-deps  # experiments/*.py import dsvl_jax from anywhere
	touch $@

$(VENV)/.test: requirements.txt requirements-serve.txt requirements-test.txt $(VENV)/.runtime
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

run: $(VENV)/.runtime
	$(PY) -m dsvl_jax.main --config=$(CONFIG) --workdir=$(WORKDIR)

# The linter and the formatter (pyproject.toml) first, then two pytest-xdist workers, one
# file each at a time (module fixtures stay whole).
# The web-page test drives Debian's chromium; installed here when missing (needs root and
# the Debian mirror; without it that one test skips and says why).
test: $(VENV)/.test
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "note: chromium could not be installed; tests/test_serve_web.py will skip"
	$(PY) -m ruff check .
	$(PY) -m pyink --check --quiet .
	$(PY) -m pytest tests -n 2 --dist loadfile

bench: $(VENV)/.test
	$(PY) experiments/bench_compile.py

clean:
	rm -rf $(VENV)
