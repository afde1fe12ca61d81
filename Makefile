# Two commands do everything on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
SYSTEM  := $(VENV)/.system
DATASET := /usr/share/datasets/fashion-mnist
# The Python of .venv, pyproject.toml's requires-python; PYTHON builds it: python3.11 where there is one
PY_NEEDS := 3.11
PYTHON   ?= $(if $(shell command -v python3.11),python3.11,python3)
VERSION  := -c 'import sys; print("%d.%d" % sys.version_info[:2])'
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help setup system data pipeline run results docs quality serve test lint bench gpu-check lock image-lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup: $(STAMP) $(SYSTEM)  ## create .venv with the project (editable) and dev tools; Debian packages

# .venv is (re)created, with $(PYTHON), unless its interpreter is Python $(PY_NEEDS) with pip already: a .venv of
# another version (a first `make setup` with python3 3.12), or one without pip (a set-up interrupted while venv
# installed it, a venv made without it), is replaced, keeping the Debian packages' stamp.
$(STAMP): pyproject.toml constraints.txt
	@if [ "$$($(PY) $(VERSION) 2>/dev/null)" != $(PY_NEEDS) ] || ! $(PY) -m pip --version >/dev/null 2>&1; then \
	  found=$$($(PYTHON) $(VERSION) 2>/dev/null || true); \
	  if [ "$$found" != $(PY_NEEDS) ]; then \
	    echo "setup: expected Python $(PY_NEEDS) (pyproject.toml's requires-python), found" \
	         "$${found:+Python }$${found:-no Python} (PYTHON=$(PYTHON)): install python$(PY_NEEDS) (and" \
	         "python$(PY_NEEDS)-venv), or set PYTHON=/path/to/python$(PY_NEEDS)" >&2; \
	    exit 1; \
	  fi; \
	  if [ "$$($(PY) $(VERSION) 2>/dev/null)" = $(PY_NEEDS) ]; then \
	    echo "setup: recreating $(VENV) with $(PYTHON): it has no pip (an interrupted set-up?)"; \
	  elif [ -d $(VENV)/bin ]; then echo "setup: recreating $(VENV) with $(PYTHON): its Python is not $(PY_NEEDS)"; fi; \
	  system=$$([ -e $(SYSTEM) ] && echo yes || true); \
	  $(PYTHON) -m venv --clear $(VENV); \
	  if [ -n "$$system" ]; then touch $(SYSTEM); fi; \
	fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

# Debian packages: the embedded default dataset, Prometheus (server and promtool) for the monitoring tests, and the
# Pushgateway for the telemetry tests. `apt-get update` runs once, only when something is missing; the stamp depends
# on this file, so that a package added here is installed in an existing checkout too.
APT_NEEDS = $(if $(wildcard $(DATASET)/train-images-idx3-ubyte.gz),,dataset-fashion-mnist) \
            $(if $(shell command -v promtool),,prometheus) \
            $(if $(shell command -v prometheus-pushgateway),,prometheus-pushgateway)
$(SYSTEM): Makefile
	@if [ -n "$(strip $(APT_NEEDS))" ]; then \
	  if command -v apt-get >/dev/null; then \
	    $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(strip $(APT_NEEDS)); \
	  else echo "setup: expected apt-get to install $(strip $(APT_NEEDS)), found none: install them yourself" >&2; \
	    exit 1; fi; \
	fi
	@mkdir -p $(VENV) && touch $@

system: $(SYSTEM)  ## install the Debian packages only

data: setup  ## put Fashion-MNIST in data/ and check it against data.dvc (SOURCE=folder to copy from)
	$(PY) -m components.common.data $(if $(SOURCE),--source $(SOURCE))

pipeline: setup data  ## dvc repro: the eight stages, ingest to gate, each only when its inputs changed (the gate every time)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

run: setup data pipeline  ## set-up, data, and `dvc repro` on the default dataset

results: setup  ## docs/pipeline-run.md, docs/quality/held_out.md and calibration.md from the last `dvc repro`'s artifacts; releases/latest recorded in docs/release/; `make docs`
	$(PY) -m components.common.report --output docs/pipeline-run.md
	$(if $(wildcard releases/latest/model_card.json),$(PY) -m docs.generate --record releases/latest)
	$(PY) -m benchmarks.quality.held_out --if-changed
	$(PY) -m benchmarks.quality.calibration --if-changed
	$(MAKE) --no-print-directory docs

docs: setup  ## every generated doc again from its committed data, nothing measured (tests/test_generated_docs.py checks)
	$(PY) -m benchmarks.speed.report
	$(PY) -m benchmarks.quality.report
	$(PY) -m benchmarks.quality.inner_lr --render
	$(PY) -m benchmarks.quality.seeds --render
	$(PY) -m benchmarks.quality.held_out --render
	$(PY) -m benchmarks.quality.calibration --render
	$(PY) -m benchmarks.quality.exact --render
	$(PY) -m docs.generate

quality: setup data  ## the quality study, ablation, inner_lr probe and more seeds from scratch (about 155 min on 2 cores): docs/results.md, docs/quality/
	rm -rf artifacts/quality
	$(PY) -m benchmarks.quality --work artifacts/quality --output docs/results.md
	$(PY) -m benchmarks.quality.inner_lr --work artifacts/quality --output docs/quality/inner_lr.md
	$(PY) -m benchmarks.quality.seeds --work artifacts/quality --output docs/quality/seeds.md

serve: setup  ## serve a released model on port 8080 (MODEL=releases/latest, PORT=8080): KServe, v1 and v2 REST, v2 gRPC on 8081
	$(PY) -m serving --model $(or $(MODEL),releases/latest) --http-port $(or $(PORT),8080)

# The suite runs on TEST_WORKERS processes (pytest-xdist; each a test file at a time, on one torch thread): 2 fits
# the 2-core machines CI runs on; TEST_WORKERS=0 runs it in this process alone.
TEST_WORKERS ?= 2

test: setup  ## set-up and the whole test suite (with the linter; TEST_WORKERS=2 processes)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: setup  ## the linter alone
	$(VENV)/bin/ruff check .

bench: setup data  ## benchmarks (about 12 minutes on 2 cores): docs/benchmarks.md, benchmarks/results.json, serving.md's figures
	$(PY) -m benchmarks.run
	$(PY) -m docs.generate

# On a GPU machine whose own Python has CUDA torch (GPU_PYTHON=python3 there: no set-up, no network needed), with
# data/fashion-mnist beside it; GPU_OUT is the folder it writes results.json and pytest.log to.
GPU_PYTHON ?= $(PY)
GPU_OUT    ?= artifacts/gpu-check
gpu-check:  ## on a GPU: CUDA tests, the meta step at GPU speed, bf16 against fp32, a short exact training (under 8 min)
	$(GPU_PYTHON) -m benchmarks.gpu.check --data data/fashion-mnist --out $(GPU_OUT) $(if $(BUDGET),--budget $(BUDGET))

lock: $(STAMP)  ## regenerate constraints.txt from the current environment (replaced only when pip freeze succeeds)
	{ echo "# pip freeze of the tested environment; regenerate with: make lock"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^mlnt-pipeline'; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

# The image's hash-checked installs (Dockerfile: pip install --require-hashes): constraints.txt's pins with the
# sha256 of every file PyPI serves for them, resolved for the image (Linux x86_64, CPython 3.11) by uv in a scratch
# virtual environment. image-cpu.txt is image-gpu.txt less torch, torchvision and the CUDA wheels only they need: the
# CPU variant takes torch and torchvision from PyTorch's CPU index (see the Dockerfile); image-build.txt is the build
# backend alone, installed first so that sdists build without fetching one unchecked. Run after `make lock`.
UV_VERSION := 0.13.9
LOCK_VENV  := $(or $(TMPDIR),/tmp)/mlnt-image-lock-venv
CUDA_ONLY  := ^(torch|torchvision|triton)==|^cuda-|^nvidia-(cu|nccl|nvjitlink|nvshmem|nvtx)
image-lock: constraints.txt pyproject.toml requirements/build.in  ## requirements/image-*.txt: hashed locks of constraints.txt for the image (needs PyPI)
	@[ -x $(LOCK_VENV)/bin/uv ] || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q uv==$(UV_VERSION); }
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml requirements/build.in -c constraints.txt --generate-hashes \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 --index-url https://pypi.org/simple \
	  --no-annotate --custom-compile-command "make image-lock" --quiet -o requirements/image-gpu.txt
	awk '/^[^ #]/ { skip = ($$0 ~ /$(CUDA_ONLY)/) } !skip' requirements/image-gpu.txt > requirements/image-cpu.txt
	awk '/^[^ #]/ { keep = ($$0 ~ /^setuptools==/) } keep || /^#/' requirements/image-gpu.txt > requirements/image-build.txt

clean:  ## remove pipeline outputs (keeps .venv and data/)
	rm -rf artifacts
