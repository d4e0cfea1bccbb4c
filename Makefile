# The two commands of the README: `make run` and `make test`.
#
# How twistd finds the `chatgate` plugin:
# - run:  `pip install .` (not editable) copies twisted/plugins/chatgate_plugin.py
#         into site-packages/twisted/plugins/, where Twisted looks first.
# - test: `pip install -e .` puts a .pth file in site-packages naming this
#         folder, so the repository root is on sys.path of every interpreter of
#         the venv (the `twistd` a test starts as a subprocess included), and
#         Twisted's twisted.plugins package adds every `twisted/plugins` folder
#         it finds on sys.path to its own path. No PYTHONPATH is needed.
# The two share .venv: each target reinstalls in its own mode, so after
# `make run` a `make test` runs against the working tree again, and the reverse.
#
# The build tools are installed once into the venv and builds run without
# isolation, so a rerun needs no network once the dependencies are in.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check

# System programs the tests need, as command:apt-package pairs, installed with
# apt-get by `make test-deps` when the command is missing (e.g. redis-server:redis-server).
TEST_SYSTEM_PACKAGES := chromium:chromium npm:npm redis-server:redis-server

# The browser tests' JavaScript (Strophe.js, an independent BOSH client),
# installed from tests/browser/package-lock.json into its git-ignored node_modules.
BROWSER_DEPS := tests/browser/node_modules/.package-lock.json

# The webmail chat pane's JavaScript dependency (Strophe.js, npm), installed from
# pane/package-lock.json and copied into the package data (git-ignored), so that
# `pip install .` ships it with the pane's own files (chatgate/web/static/).
PANE_VENDOR := chatgate/web/static/vendor/strophe.esm.js

.PHONY: run test test-deps browser-deps pane node-deps

run: pane $(VENV)/.build-tools
	$(PIP) install --quiet --no-build-isolation .
	exec $(BIN)/twistd --pidfile= --umask 077 -n chatgate --config tap-config.ini

test: test-deps browser-deps pane $(VENV)/.build-tools
	$(PIP) install --quiet --no-build-isolation -e '.[test]'
	$(BIN)/pytest -q

test-deps:
	@missing=""; \
	for dep in $(TEST_SYSTEM_PACKAGES); do \
		command -v "$${dep%%:*}" >/dev/null 2>&1 || missing="$$missing $${dep#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

browser-deps: $(BROWSER_DEPS)

$(BROWSER_DEPS): tests/browser/package.json tests/browser/package-lock.json | test-deps
	cd tests/browser && npm ci --no-audit --no-fund

pane: $(PANE_VENDOR)

$(PANE_VENDOR): pane/package.json pane/package-lock.json | node-deps
	cd pane && npm ci --no-audit --no-fund
	mkdir -p $(@D)
	cp pane/node_modules/strophe.js/dist/strophe.esm.js pane/node_modules/strophe.js/dist/strophe.esm.js.map $(@D)/
	cp pane/node_modules/strophe.js/LICENSE.txt $(@D)/strophe.LICENSE.txt

# npm for `make pane` (also on the `make run` path, which needs no test packages).
node-deps:
	@command -v npm >/dev/null 2>&1 || { \
		echo "installing system packages: npm"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pyproject.toml asks for setuptools>=68; older venvs come with less.
$(VENV)/.build-tools: | $(BIN)/python
	$(PIP) install --quiet 'setuptools>=68' wheel
	touch $@
