# The two commands:  make book   (execute every chapter, build HTML into _build/html)
#                    make test   (unit tests + every chapter in smoke mode, with pytest)
# Both create .venv on first use (python3 -m venv; ~2 min here, offline from the local wheel
# mirror) and install the pinned dependencies once (a stamp file remembers it).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.samlib-installed
# Extra pip arguments for torch only. Elsewhere, to avoid the CUDA build on Linux, use e.g.
#   make book TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
# Another table of contents, e.g. to build a subset of the chapters: make book TOC=/tmp/toc.yml
TOC ?= _toc.yml

# Chapters executed by the book build write their metrics here (absolute path, because the
# notebooks run with their own folder as the working directory); book/results.md reads them.
RESULTS_DIR ?= $(CURDIR)/_build/metrics
# Kernel "python3" must be the venv's own: put the venv's kernelspecs first on the search path
# (jupyter_client then launches sys.executable of the venv), so nothing is registered globally.
export JUPYTER_PATH := $(CURDIR)/$(VENV)/share/jupyter$(if $(JUPYTER_PATH),:$(JUPYTER_PATH))
export PYDEVD_DISABLE_FILE_VALIDATION = 1

# Offline MathJax and the ipywidgets HTML manager: npm packages (pinned), fetched once with `npm pack`
# into .cache/npm (ignored), unpacked into _build/vendor, which Sphinx copies into the book's _static/
# (html_static_path in _config.yml). Needs npm, only for `make book`.
NPM ?= npm
NPM_CACHE ?= .cache/npm
VENDOR := _build/vendor
MATHJAX_VERSION := 3.2.2
HTML_MANAGER_VERSION := 1.0.15
REQUIREJS_VERSION := 2.3.8
VENDOR_STAMP := $(VENDOR)/.mathjax-$(MATHJAX_VERSION)-widgets-$(HTML_MANAGER_VERSION)-require-$(REQUIREJS_VERSION)

.PHONY: all book browser-check test lint bench perf venv vendor clean distclean help

all: help

help:
	@echo "make book   - create .venv if needed, execute every notebook, build _build/html"
	@echo "make test   - create .venv if needed, run pytest (unit tests + smoke runs of the chapters)"
	@echo "make browser-check - open every built page in headless Chromium, offline (after make book)"
	@echo "make lint   - ruff + mypy samlib"
	@echo "make bench  - run the chapters of BENCH (default benchmarks/smoke.toml) into results/bench, resumably"
	@echo "make perf   - benchmarks/perf.py --quick: samlib's fast paths as ratios against the reference"
	@echo "make clean  - remove _build and caches (keeps .venv; 'make distclean' removes it too)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
	  || { echo "error: $(PYTHON) is older than Python 3.10; run e.g. make PYTHON=python3.11"; exit 1; }
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install $(TORCH_PIP_ARGS) torch==2.13.0
	$(BIN)/python -m pip install -e '.[book,dev,geo]'
	@touch $@

vendor: $(VENDOR_STAMP)

$(VENDOR_STAMP):
	@command -v $(NPM) >/dev/null || { echo "error: make book needs npm (Node.js) to fetch MathJax and the widget manager"; exit 1; }
	@mkdir -p $(NPM_CACHE)
	@for pkg in mathjax@$(MATHJAX_VERSION) @jupyter-widgets/html-manager@$(HTML_MANAGER_VERSION) requirejs@$(REQUIREJS_VERSION); do \
	  tgz=$$(echo "$$pkg" | sed 's#^@##; s#/#-#; s#@#-#').tgz; \
	  test -s $(NPM_CACHE)/$$tgz || (cd $(NPM_CACHE) && $(NPM) pack --silent "$$pkg" >/dev/null) || exit 1; \
	done
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)/mathjax $(VENDOR)/widgets $(VENDOR)/.unpack
	tar xzf $(NPM_CACHE)/mathjax-$(MATHJAX_VERSION).tgz -C $(VENDOR)/.unpack && cp -r $(VENDOR)/.unpack/package/es5/. $(VENDOR)/mathjax/
	rm -rf $(VENDOR)/.unpack/package
	tar xzf $(NPM_CACHE)/jupyter-widgets-html-manager-$(HTML_MANAGER_VERSION).tgz -C $(VENDOR)/.unpack && cp -r $(VENDOR)/.unpack/package/dist/. $(VENDOR)/widgets/
	rm -rf $(VENDOR)/.unpack/package
	tar xzf $(NPM_CACHE)/requirejs-$(REQUIREJS_VERSION).tgz -C $(VENDOR)/.unpack && cp $(VENDOR)/.unpack/package/require.js $(VENDOR)/widgets/require.js
	rm -rf $(VENDOR)/.unpack $(VENDOR)/widgets/*.map
	@touch $@

book: export SAMLIB_RESULTS_DIR = $(RESULTS_DIR)
book: $(STAMP) $(VENDOR_STAMP)
	@mkdir -p "$(SAMLIB_RESULTS_DIR)" && rm -f "$(SAMLIB_RESULTS_DIR)"/*.json  # every chapter re-runs
	$(BIN)/jupyter-book build . --builder html --toc $(TOC)
	@echo "open _build/html/index.html"

# Open every page of _build/html in headless Chromium (Debian's /usr/bin/chromium, or $$CHROMIUM), with
# the network blocked, and check math, figures, tracebacks and the claims table; screenshots go to
# _build/screenshots/. Playwright drives the browser (installed into the venv on first use).
PLAYWRIGHT_VERSION := 1.65.2
browser-check: $(STAMP)
	@$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/python -m pip install -q playwright==$(PLAYWRIGHT_VERSION)
	$(BIN)/python scripts/browser_check.py _build/html --screenshots _build/screenshots

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# A benchmark: chapters x parameter grids x models from a TOML file; unchanged runs are skipped.
BENCH ?= benchmarks/smoke.toml
bench: $(STAMP)
	$(BIN)/python -m samlib.bench $(BENCH)

perf: $(STAMP)
	$(BIN)/python benchmarks/perf.py --quick --json results/perf/perf-quick.json

lint: $(STAMP)
	$(BIN)/ruff check samlib tests scripts
	$(BIN)/mypy samlib

clean:
	rm -rf _build .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
