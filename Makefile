# fairseq-nas: set-up, tests and demo.  Everything runs inside .venv/.
BASE_PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
FAIRSEQ_PKG ?= ve-fairseq==0.12.3
PYTEST_ARGS ?= -n 2 --durations=15

.PHONY: setup test lint demo bench clean

setup: $(STAMP)

# The stamp depends on the files that define the environment, so a second run is a no-op.
$(STAMP): requirements.txt requirements-dev.txt setup.py
	@command -v $(BASE_PYTHON) >/dev/null 2>&1 || { echo "error: $(BASE_PYTHON) not found; set BASE_PYTHON=/path/to/python3.11" >&2; exit 1; }
	test -x $(PY) || $(BASE_PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# torch first, pinned to the CPU build, so nothing later resolves a CUDA torch.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt -r requirements-dev.txt
	# fairseq without its declared deps (torchaudio would replace the CPU torch).
	$(PIP) install -q --no-deps $(FAIRSEQ_PKG)
	$(PIP) install -q --no-deps -e .
	$(PY) -c "import torch, fairseq, lightgbm, sacrebleu, sentencepiece, fairseq_nas; \
	  assert torch.__version__.startswith('2.13.0'), torch.__version__; \
	  print('setup ok: torch', torch.__version__, 'fairseq', fairseq.__version__)"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

lint: setup
	$(VENV)/bin/ruff check fairseq_nas tests benchmarks

demo: setup
	bash scripts/demo.sh demo-out

clean:
	rm -rf $(VENV) demo-out .pytest_cache
