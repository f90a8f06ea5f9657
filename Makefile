PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench gallery figures clean

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
gallery: $(VENV)/.installed
	$(BIN)/modeconn trajectory -m net=logistic,5x1,20x1,100x1,5x5,20x5,100x5,5x10,20x10,100x10 init=he
	$(BIN)/modeconn trajectory gallery=results/trajectory

# the README's curvature figures (docs/curvature_*.png)
figures: $(VENV)/.installed
	$(BIN)/python docs/curvature_figures.py

lint: $(VENV)/.installed
	$(BIN)/ruff check modeconn tests benchmarks
	$(BIN)/ruff format --check modeconn tests benchmarks

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
