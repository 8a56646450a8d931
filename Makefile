# The two commands a new user needs: `make demo` and `make test`. Both bootstrap .venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
RESULTS ?= .benchmarks

.PHONY: demo test bench nightly golden fixtures gpu chromium clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Debian's chromium for the dashboard's browser test (skipped with a reason when it cannot be installed).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "note: chromium not installed; the browser test will skip"; }

demo: $(STAMP)
	$(PY) -m maxwhisper demo

test: $(STAMP) chromium
	$(PY) -m pytest

bench: $(STAMP)
	MAXWHISPER_BENCH=full $(PY) -m pytest tests/bench -m "bench and not slow" --benchmark-autosave \
	  --benchmark-save-data --benchmark-storage=file://$(RESULTS)

gpu: $(STAMP)
	$(PY) -m pytest -m gpu

nightly: $(STAMP) chromium
	$(PY) -m maxwhisper.nightly --results $(RESULTS)

golden: $(STAMP)
	$(PY) -m maxwhisper.golden

fixtures:
	$(PYTHON) fixtures/make_audio.py

clean-venv:
	rm -rf $(VENV)
