# advbook: `make book` builds the book, `make test` runs every check. See README.md.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.advbook-installed
TIMINGS := _build/timings.txt
SPHINX_OPTS ?=
export PYTHONHASHSEED := 0
export ADVBOOK_PROGRESS ?= 0
# the book's own Sphinx extension (list of figures), named in _config.yml local_extensions
export PYTHONPATH := $(CURDIR)/book/_ext$(if $(PYTHONPATH),:$(PYTHONPATH))

# time a step: $(call timed,label,command)
define timed
	@mkdir -p _build; echo "== $(1)"; SECONDS=0; \
	$(2); \
	printf '%6d s  %s\n' "$$SECONDS" "$(1)" | tee -a $(TIMINGS)
endef

# The notebook check runs every chapter twice: on this CPU's own numeric path and on a second one
# (ATen's scalar kernels, oneDNN capped at SSE4.1, MKL's compatible code path on x86-64; ATen's
# scalar kernels elsewhere), both against the same stored outputs and the tolerances declared in
# the cells (tools/nbtolerance.py). Notebooks run in parallel, one per worker.
ifeq ($(shell uname -m),x86_64)
EMULATED_CPU ?= ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_CBWR=COMPATIBLE
else
EMULATED_CPU ?= ATEN_CPU_CAPABILITY=default
endif
NB_WORKERS ?= 2
NBVAL = $(BIN)/python -m pytest -q -p no:cacheprovider --nbval --nbval-current-env \
	--nbval-sanitize-with book/sanitize.cfg --nbval-cell-timeout 1800 -n $(NB_WORKERS) --dist loadfile
NOTEBOOK_FILES ?= book

.PHONY: help install book serve test unit notebooks-check notebooks-check-native notebooks-check-emulated notebooks-check-teeth print-emulated-cpu book-check test-html chromium lint notebooks bench clean

help:
	@echo "make book   - create .venv if missing, install, execute every chapter, build _build/html"
	@echo "make test   - unit tests, nbval re-run of every notebook on this CPU's numeric path and on an"
	@echo "              emulated other CPU (numbers within declared tolerances, figures compared),"
	@echo "              sabotage tests of that check, strict build, browser check of every page"
	@echo "make notebooks-check - only the notebook check (NOTEBOOK_FILES=book/setup.ipynb for one)"
	@echo "make test-html - open every page of _build/html in headless Chromium (installs Debian's"
	@echo "              chromium + chromium-driver if missing; ADVBOOK_SKIP_BROWSER=1 skips without)"
	@echo "make serve  - serve _build/html on http://localhost:8000"
	@echo "make notebooks - re-execute the notebooks in place (refresh their stored outputs)"
	@echo "make bench  - time attacks and augmentation against torchattacks, foolbox and kornia"
	@echo "              (about 15 min on 2 cores); writes benchmarks/results/*.csv and RESULTS.md"

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

conf.py: _config.yml _toc.yml $(STAMP)
	$(BIN)/jupyter-book config sphinx . > /dev/null

book: install conf.py
	@rm -f $(TIMINGS)
	$(call timed,execute every chapter and build the HTML,$(BIN)/sphinx-build -b html -q -D nb_execution_mode=force -D nb_execution_timeout=1800 $(SPHINX_OPTS) . _build/html)
	@echo "The book is at $(CURDIR)/_build/html/index.html"

serve:
	$(BIN)/python -m http.server --directory _build/html 8000

test: install
	@rm -f $(TIMINGS)
	@$(MAKE) --no-print-directory chromium lint unit notebooks-check book-check test-html
	@echo; echo "== timing summary =="; cat $(TIMINGS)

lint: install
	$(call timed,ruff,$(BIN)/ruff check .)
	$(call timed,mypy --strict advbook,$(BIN)/mypy)

unit: install
	$(call timed,unit tests,$(BIN)/python -m pytest tests -q -p no:cacheprovider -m "not notebooks")

notebooks-check: notebooks-check-native notebooks-check-emulated notebooks-check-teeth

notebooks-check-native: install
	$(call timed,nbval on this CPU: re-run every notebook and compare numbers and figures,$(NBVAL) --nbfigure-results nbfigure-results/native $(NOTEBOOK_FILES))

notebooks-check-emulated: install
	$(call timed,nbval on an emulated other CPU ($(EMULATED_CPU)),env $(EMULATED_CPU) $(NBVAL) --nbfigure-results nbfigure-results/emulated $(NOTEBOOK_FILES))

# the second path's settings, for tests/test_notebook_check_teeth.py
print-emulated-cpu:
	@echo $(EMULATED_CPU)

notebooks-check-teeth: install
	$(call timed,the notebook check fails on a sabotaged library,$(BIN)/python -m pytest -q -p no:cacheprovider -n $(NB_WORKERS) -m notebooks tests/test_notebook_check_teeth.py)

book-check: install conf.py
	$(call timed,strict book build from the stored outputs,rm -rf _build/html _build/doctrees && $(BIN)/sphinx-build -b html -W --keep-going -n -q -D nb_execution_mode=off $(SPHINX_OPTS) . _build/html)

# Debian's headless browser for test-html and tests/test_check_html.py (never a browser download)
CHROMIUM ?= /usr/bin/chromium
CHROMEDRIVER ?= /usr/bin/chromedriver

chromium:
	@if [ -x "$(CHROMIUM)" ] && [ -x "$(CHROMEDRIVER)" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else sudo=none; fi; \
	if [ "$$sudo" != none ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "== installing Debian's chromium and chromium-driver (apt-get) for the browser check"; \
	  { $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } || true; \
	fi; \
	if [ -x "$(CHROMIUM)" ] && [ -x "$(CHROMEDRIVER)" ]; then exit 0; fi; \
	if [ "$${ADVBOOK_SKIP_BROWSER:-0}" = 1 ]; then \
	  echo "!!!!!!!! SKIP: no $(CHROMIUM) / $(CHROMEDRIVER) and ADVBOOK_SKIP_BROWSER=1: the built pages will NOT be opened in a browser !!!!!!!!"; \
	else \
	  echo "error: the browser check needs $(CHROMIUM) and $(CHROMEDRIVER), which could not be installed. Run 'apt-get install chromium chromium-driver' as root, or set ADVBOOK_SKIP_BROWSER=1 to skip the check." >&2; \
	  exit 1; \
	fi

test-html: install conf.py chromium
	@test -f _build/html/index.html || $(MAKE) --no-print-directory book-check
	$(call timed,browser check: every page of _build/html in headless Chromium,if [ -x "$(CHROMIUM)" ] && [ -x "$(CHROMEDRIVER)" ]; then $(BIN)/python -m tools.check_html _build/html --chromium $(CHROMIUM) --chromedriver $(CHROMEDRIVER); else echo "!!!!!!!! SKIP test-html: no headless Chromium (ADVBOOK_SKIP_BROWSER=1) !!!!!!!!"; fi)

notebooks: install
	ADVBOOK_PROGRESS=0 $(BIN)/python -m tools.execute_notebooks $(NOTEBOOKS)

bench: install
	$(call timed,benchmarks (python -m benchmarks),$(BIN)/python -m benchmarks --threads 1 $(BENCH_OPTS))

clean:
	rm -rf _build conf.py nbfigure-results .pytest_cache
