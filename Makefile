# forever-slurm: build, test, demo. `make help` lists the targets.
PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest
# Console scripts pip installs for this Python (traefik, vermin) come first on PATH.
export PATH := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$(PATH)

.PHONY: help pyz provision llm-deps test test-fast test-e2e demo demo-stop bench vermin clean

help:
	@echo "make demo       build, start a local 3-node Slurm cluster + Traefik, run hello-python/2"
	@echo "make demo-stop  stop everything the demo started"
	@echo "make test       all tests (fast ones, then the real Slurm/Traefik/sshd ones)"
	@echo "make test-fast  tests that need no daemons"
	@echo "make pyz        build forever_slurm.pyz"
	@echo "make llm-deps   install llama-cpp-python[server] and gguf (and their build tools) for the LLM tests"
	@echo "make bench      print the benchmark figures"

pyz:
	$(PYTHON) build_pyz.py

provision:
	bin/provision-tests

# The real llama.cpp tests need llama-cpp-python (built from source once, then from pip's wheel cache).
llm-deps:
	PYTHON=$(PYTHON) bin/install-llm

# Every test, nothing skipped: a skipped real-component test fails the run (tests/conftest.py).
test: pyz provision llm-deps
	$(PYTEST) -q -rs tests

test-fast: pyz
	$(PYTEST) -q -m "not e2e" tests

test-e2e: pyz provision llm-deps
	$(PYTEST) -q -rs -m e2e tests

vermin:
	vermin --no-tips --violations -t=3.6- src

demo: pyz
	bin/demo start

demo-stop:
	bin/demo stop

bench: pyz
	for b in bench/*; do [ -x "$$b" ] && "$$b"; done

clean:
	rm -rf forever_slurm.pyz .pytest_cache build
