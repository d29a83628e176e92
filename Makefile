# Two commands for a fresh machine: `make run` (the gateway with a demo
# config) and `make test` (the whole suite). Everything else is a step of
# those two.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run test venv build init bench sink clamd clean distclean

$(STAMP): requirements.txt requirements-test.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet -r requirements.txt -r requirements-test.txt
	# Editable: .venv/bin/portcullis runs this checkout, compiled parts included.
	# (setuptools warns at length that an editable install is editable.)
	PYTHONWARNINGS=ignore $(PIP) install --quiet --no-build-isolation --no-deps -e .
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
	@$(PY) -m core.cli init --if-needed --generate-password

run: init
	$(PY) -m core.cli run

test: build
	$(PY) -m pytest

# A demo downstream mail server: stores what the gateway relays to it.
sink: $(STAMP)
	@echo "demo downstream on 127.0.0.1:2500, mail lands in var/demo-mail/"
	$(PY) -m tests.support.sink --dir var/demo-mail --port 2500

# A private clamd that knows only the EICAR test signature.
clamd: $(STAMP)
	$(PY) -m tests.support.clamd --dir var/clamd

bench: build
	$(PY) bench/replay.py
	$(PY) bench/bayes.py

clean:
	rm -rf build core/fast/*.c core/fast/*.so
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) var portcullis.conf
