# forever-slurm: build, test, demo. `make help` lists the targets.
# PYTHON: the Python that runs make (default: python3 on PATH). It builds the .pyz and makes the project's
# virtual environment .venv, where everything the tests, benchmarks and demo need from PyPI goes
# (bin/project-venv); nothing is pip-installed into PYTHON itself.
PYTHON ?= python3
BASE_PYTHON := $(shell command -v $(PYTHON))
VENV := $(CURDIR)/.venv
PYTEST ?= $(VENV)/bin/python -m pytest
# The fast tests run on every core (pytest-xdist; each test has its own temp root, ports and fake Slurm);
# the real-component ones one at a time, since each starts a cluster of its own.
FAST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
# The venv's console scripts (pytest, vermin, traefik) and python3 come first on PATH.
export PATH := $(VENV)/bin:$(PATH)

.PHONY: help pyz provision tools llm-deps test test-fast test-e2e demo demo-stop bench vermin clean

help:
	@echo "make demo       build, start a local 3-node Slurm cluster + Traefik, run hello-python/2"
	@echo "make demo-stop  stop everything the demo started"
	@echo "make test       all tests (fast ones, then the real Slurm/Traefik/sshd ones)"
	@echo "make test-fast  tests that need no daemons"
	@echo "make pyz        build forever_slurm.pyz"
	@echo "make llm-deps   install llama-cpp-python[server] and gguf (and their build tools) for the LLM tests"
	@echo "make bench      print the benchmark figures"
	@echo "(what comes from PyPI goes into $(VENV), made from $(BASE_PYTHON))"

pyz:
	$(BASE_PYTHON) build_pyz.py

provision:
	PYTHON=$(BASE_PYTHON) bin/provision-tests

tools:
	PYTHON=$(BASE_PYTHON) bin/provision-tests --venv-only

# The real llama.cpp tests need llama-cpp-python (built from source once, then from pip's wheel cache).
llm-deps:
	PYTHON=$(BASE_PYTHON) bin/install-llm

# Every test, nothing skipped: a skipped real-component test fails the run (tests/conftest.py).
test: pyz provision llm-deps
	$(PYTEST) -q -rs -n $(FAST_WORKERS) -m "not e2e" tests
	$(PYTEST) -q -rs --durations=30 -m e2e tests

test-fast: pyz tools
	$(PYTEST) -q -rs -n $(FAST_WORKERS) -m "not e2e" tests

test-e2e: pyz provision llm-deps
	$(PYTEST) -q -rs --durations=30 -m e2e tests

vermin: tools
	vermin --no-tips --violations -t=3.6- src

demo: pyz
	PYTHON=$(BASE_PYTHON) $(BASE_PYTHON) bin/demo start

demo-stop:
	$(BASE_PYTHON) bin/demo stop

bench: pyz provision llm-deps
	for b in bench/*; do [ -x "$$b" ] && "$$b"; done

clean:
	rm -rf forever_slurm.pyz .pytest_cache build
