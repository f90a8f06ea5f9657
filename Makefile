PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint docs bench gallery figures clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/modeconn demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/pip install -e '.[dev,bench]'
	$(BIN)/python benchmarks/run_all.py

# the trajectory post's grid as one multirun (about 4 minutes on 2 cores), then its gallery
# into results/trajectory/ (make figures copies it into the site)
gallery: $(VENV)/.installed
	$(BIN)/modeconn trajectory -m net=logistic,5x1,20x1,100x1,5x5,20x5,100x5,5x10,20x10,100x10 init=he
	$(BIN)/modeconn trajectory gallery=results/trajectory

# every figure of the site (docs/figures/*.png), from the code: about 15 minutes on 2 cores
# (make figures JOBS="demo layers" draws only those; the jobs are listed in docs/figures.py)
figures: $(VENV)/.installed
	$(BIN)/python docs/figures.py $(JOBS)

# the site: pages from docs/, the API from the docstrings, the configuration from conf/;
# --strict fails on a broken link, a missing page or an API entry that does not resolve.
# Open site/index.html: it needs no server and no network.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	@! grep -rlE '<(script|link|img)[^>]+(src|href)="(https?:)?//' site --include='*.html' \
		|| (echo "make docs: a page above loads something from the network" && false)

lint: $(VENV)/.installed
	$(BIN)/ruff check modeconn tests benchmarks docs
	$(BIN)/ruff format --check modeconn tests benchmarks docs/*.py docs/hooks

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache site build/figures
