# One command to set up and run the demo, one to set up and run the tests.
# Every target creates .venv on first use and installs from this project's own files;
# constraints.txt pins torch to its CPU build so no multi-GB CUDA build is pulled in.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# On a machine without an NVIDIA GPU whose package source is plain PyPI, the pinned torch is a
# multi-GB CUDA build; take the CPU build instead with
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (an extra index: its 2.13.0+cpu satisfies the pin, and a source that already serves the CPU
# build keeps working).
TORCH_INDEX ?=
# --no-compile: pip would byte-compile every installed module (half the install time on two
# cores); instead Python compiles the modules it imports, once, on first use (the targets that
# run Python clear PYTHONDONTWRITEBYTECODE so that those .pyc files are kept).
PIP    := $(BIN)/python -m pip --disable-pip-version-check $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
PIPI   := $(PIP) install --no-compile

.DEFAULT_GOAL := help
.PHONY: help install install-dev browser sshd validators debian-tools checkov-venv checkov demo test lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIPI) -q -c constraints.txt -e ".[s3,ec2]"
	@touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIPI) -q -c constraints.txt -e ".[dev]"
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed  ## create .venv and install wms (with S3 and EC2/SSH support)

install-dev: $(VENV)/.installed-dev  ## create .venv and install wms with the test tools

browser:  ## headless Chromium + chromedriver for the web-page test (Debian packages; needs root)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

sshd:  ## OpenSSH server for the remote-training tests, which start their own on loopback (Debian; needs root)
	@test -x /usr/sbin/sshd || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server)

validators:  ## cloud-init, shellcheck, promtool and amtool, which check what the cloud consumes (Debian; needs root)
	@command -v cloud-init >/dev/null && command -v shellcheck >/dev/null && command -v promtool >/dev/null && \
	  command -v amtool >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    cloud-init shellcheck prometheus prometheus-alertmanager)

# checkov lives in a virtual environment of its own: its many exact pins are not ours to share.
CHECKOV_VERSION ?= 3.3.30
CHECKOV_VENV    ?= .venv-checkov

$(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip --disable-pip-version-check install --no-compile -q checkov==$(CHECKOV_VERSION)
	@touch $@

checkov-venv: $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

# The charts too, as helm renders them (devops/helm/render.sh, with the dev extra's helm), in a
# folder of their own: checkov would read .checkov.yaml here, which leaves them out.
checkov: checkov-venv install-dev  ## checkov over the Terraform, Dockerfile, workflows (.checkov.yaml) and the rendered charts
	$(CHECKOV_VENV)/bin/checkov --config-file .checkov.yaml
	@rendered=$$(mktemp -d) && trap 'rm -rf "$$rendered"' EXIT && \
	  HELM=$(abspath $(BIN))/helm devops/helm/render.sh > "$$rendered/charts.yaml" && \
	  cd "$$rendered" && $(abspath $(CHECKOV_VENV))/bin/checkov --file charts.yaml \
	    --framework kubernetes --compact --quiet --skip-download

demo: install  ## run the whole loop on synthetic data with the embedded defaults
	PYTHONDONTWRITEBYTECODE= $(BIN)/wms demo

lint: install-dev  ## ruff and mypy
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# The set-up steps run side by side (two pip installs and apt-get), then lint beside checkov:
# on two cores that spares about two minutes of a fresh clone's `make test`. The suite runs on
# TEST_WORKERS pytest-xdist workers (most tests wait on servers and subprocesses, so two
# workers take about 40% less time on two cores), then the tests marked serial run alone: they
# kill a run mid-job and resume it, which a busy second worker can make miss its moment.
TEST_WORKERS ?= 2
test:  ## set up, lint and checkov, then the test suite
	@$(MAKE) --no-print-directory -j3 --output-sync=target install-dev checkov-venv debian-tools
	@$(MAKE) --no-print-directory -j2 --output-sync=target lint checkov
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not serial"
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -m serial

debian-tools:  # the Debian packages the tests use, one apt-get after another (they share a lock)
	@MAKEFLAGS= $(MAKE) --no-print-directory browser sshd validators

clean:  ## remove the virtual environment and local state (.wms/)
	rm -rf $(VENV) $(CHECKOV_VENV) .wms .pytest_cache .mypy_cache .ruff_cache
