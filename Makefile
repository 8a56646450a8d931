# The two commands a new user needs: `make demo` and `make test`. Both bootstrap .venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
RESULTS ?= .benchmarks

.PHONY: venv demo test bench nightly golden fixtures gpu chromium clean-venv

# uv installs the same packages as pip faster (measured here: 36 s against 107 s from empty caches, plus about
# 27 s to compile the bytecode, which pip does too: where PYTHONDONTWRITEBYTECODE is set, as on this machine, a
# venv without it recompiles every import in every process, 7 s against 4 s for torch, max and whisper).
# PyTorch's CPU build comes from the machine's wheel folder where it has one (uv does not look there by itself,
# and PyPI's torch for Linux is a CUDA build of several GB); elsewhere pip installs it, as before.
TORCH_WHEELS ?= /opt/wheels
UV := $(PY) -m uv pip install -q --python $(PY) --compile-bytecode
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	if ls $(TORCH_WHEELS)/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then \
	  $(UV) --no-index --no-deps --find-links $(TORCH_WHEELS) torch==2.13.0; \
	else $(PY) -m pip install -q torch==2.13.0; fi
	$(UV) -e '.[test]'
	touch $(STAMP)

# Debian's chromium for the dashboard's browser test (skipped with a reason when it cannot be installed).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "note: chromium not installed; the browser test will skip"; }

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m maxwhisper demo

# The suite runs PyTorch's references, numpy's and MAX's graphs by turns in one process. By default libgomp keeps
# torch's idle OpenMP thread spinning after each parallel op (perf: 7% of the suite's samples), and OpenBLAS
# (numpy's) its idle thread for 2^28 cycles (1.8%), on a core that MAX's threads want: PASSIVE and a timeout of 2^4
# cycles let them sleep. Same threads, same partition, same numbers; on the Zen 4 EPYC, 2026-11-28, the passive
# OpenMP thread alone took the suite from 478-500 CPU-s and 5 m 00 s to 5 m 22 s to 420-430 CPU-s and 4 m 44 s to
# 4 m 52 s. Benchmarks run with the libraries' defaults (`make bench`, the nightly), as users run them; the suite's
# quick benchmarks are smoke runs.
test: $(STAMP) chromium
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} OPENBLAS_THREAD_TIMEOUT=$${OPENBLAS_THREAD_TIMEOUT:-4} $(PY) -m pytest

bench: $(STAMP)
	MAXWHISPER_BENCH=full $(PY) -m pytest tests/bench -m "bench and not slow" --benchmark-autosave \
	  --benchmark-save-data --benchmark-storage=file://$(RESULTS)

# A GPU box keeps its own CUDA torch: a venv over the system site-packages, the project's other
# dependencies on top (no torch pin), then every gpu test. `pytest -m gpu` fails, saying what is missing,
# if a GPU is visible but every gpu test would skip. Offline: make gpu GPU_PIP="--no-index --find-links DIR".
GPU_VENV ?= .venv-gpu
GPU_PIP  ?=
gpu:
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv --system-site-packages $(GPU_VENV)
	$(GPU_VENV)/bin/python -c "import torch" 2>/dev/null || \
	  $(GPU_VENV)/bin/python -m pip install -q $(GPU_PIP) torch --index-url https://download.pytorch.org/whl/cu128
	$(GPU_VENV)/bin/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	  print('\n'.join(d for d in p['dependencies'] + p['optional-dependencies']['test'] if not d.startswith('torch')))" \
	  > $(GPU_VENV)/requirements-gpu.txt
	$(GPU_VENV)/bin/python -m pip install -q $(GPU_PIP) -r $(GPU_VENV)/requirements-gpu.txt
	$(GPU_VENV)/bin/python -m pip install -q $(GPU_PIP) --no-deps -e .
	$(GPU_VENV)/bin/python -m pytest -m gpu

nightly: $(STAMP) chromium
	$(PY) -m maxwhisper.nightly --results $(RESULTS)

golden: $(STAMP)
	$(PY) -m maxwhisper.golden

fixtures:
	$(PYTHON) fixtures/make_audio.py

clean-venv:
	rm -rf $(VENV)
