# Dispatch hub: one entry point for a fresh Debian 12 machine.
#   make setup   system packages (only those missing) + .venv + editable install
#   make run     serve on $(BIND), SIP $(SIP_PORT), HTTP $(HTTP_PORT), data in $(DATA_DIR)
#   make test    pytest -q (PYTEST_ARGS=...); fails when pytest fails (make exits 2)
#   make lint; make bench; make clean; make distclean (also removes .venv)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := setup

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp

DATA_DIR ?= ./data
BIND ?= 0.0.0.0
SIP_PORT ?= 5060
HTTP_PORT ?= 8080
HUB_ARGS ?=
PYTEST_ARGS ?=
LINT_PACKAGES := signaling media bridges gateways dispatch console recordings hub storage

DEB_PACKAGES := python3-venv python3-dev build-essential baresip sip-tester ffmpeg sox iproute2 \
  chromium fonts-wqy-microhei openssl postgresql
# Root runs apt-get itself; anyone else goes through sudo.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup system-packages run test lint bench clean distclean

setup: system-packages $(STAMP)

# Install only what dpkg does not already report installed; apt-get update only then.
system-packages:
	@missing=""; \
	for pkg in $(DEB_PACKAGES); do \
	  status=$$(dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null || true); \
	  [ "$$status" = "install ok installed" ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing > /dev/null; \
	fi

$(PY): | system-packages
	@echo "setup: creating $(VENV)"
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever pyproject.toml changes (dependencies, entry points).
$(STAMP): pyproject.toml constraints.txt | $(PY)
	@echo "setup: pip install -e '.[dev]' (versions pinned by constraints.txt)"
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

run: setup
	@mkdir -p "$(DATA_DIR)"
	$(VENV)/bin/hub serve --data-dir "$(DATA_DIR)" --bind "$(BIND)" \
	  --sip-port "$(SIP_PORT)" --http-port "$(HTTP_PORT)" $(HUB_ARGS)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy $(LINT_PACKAGES)

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache bench/out
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
