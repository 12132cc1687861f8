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

.PHONY: help install book serve test unit notebooks-check book-check lint notebooks bench clean

help:
	@echo "make book   - create .venv if missing, install, execute every chapter, build _build/html"
	@echo "make test   - unit tests, nbval re-run of every notebook (figures compared), strict build"
	@echo "make serve  - serve _build/html on http://localhost:8000"
	@echo "make notebooks - re-execute the notebooks in place (refresh their stored outputs)"

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
	@$(MAKE) --no-print-directory lint unit notebooks-check book-check
	@echo; echo "== timing summary =="; cat $(TIMINGS)

lint: install
	$(call timed,ruff,$(BIN)/ruff check .)

unit: install
	$(call timed,unit tests,$(BIN)/python -m pytest tests -q -p no:cacheprovider)

notebooks-check: install
	$(call timed,nbval: re-run every notebook and compare outputs and figures,$(BIN)/python -m pytest -q -p no:cacheprovider --nbval --nbval-current-env --nbval-sanitize-with book/sanitize.cfg --nbval-cell-timeout 1200 book)

book-check: install conf.py
	$(call timed,strict book build from the stored outputs,rm -rf _build/html _build/doctrees && $(BIN)/sphinx-build -b html -W --keep-going -n -q -D nb_execution_mode=off $(SPHINX_OPTS) . _build/html)

notebooks: install
	ADVBOOK_PROGRESS=0 $(BIN)/python -m tools.execute_notebooks $(NOTEBOOKS)

clean:
	rm -rf _build conf.py nbfigure-results .pytest_cache
