# Two commands for a fresh machine: `make run` (the gateway with a demo
# config) and `make test` (the whole suite). Everything else is a step of
# those two.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run test venv build init bench clean distclean

$(STAMP): requirements.txt requirements-test.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet -r requirements.txt -r requirements-test.txt
	touch $(STAMP)

venv: $(STAMP)

# Compiles core/fast/*.pyx next to their sources (a pure-Python twin of each
# keeps working where this step was skipped).
build: $(STAMP)
	$(PY) setup.py --quiet build_ext --inplace

portcullis.conf:
	cp portcullis.conf.example portcullis.conf
	@echo "wrote portcullis.conf from portcullis.conf.example (demo settings)"

init: build portcullis.conf
	@$(PY) -m core.cli init --if-needed

run: init
	$(PY) -m core.cli run

test: build
	$(PY) -m pytest

bench: build
	$(PY) bench/replay.py
	$(PY) bench/bayes.py

clean:
	rm -rf build core/fast/*.c core/fast/*.so
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) var portcullis.conf
