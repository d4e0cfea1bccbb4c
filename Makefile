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
# apt-get by `make test-deps` when the command is missing (e.g. redis-server:redis-server;
# mcabber, a console client, runs in tmux; prosody writes the XEP-0227 file the export test imports).
# PostgreSQL too (package postgresql), found by initdb in Debian's /usr/lib/postgresql/<version>/bin:
# the tests start their own server in a temporary folder (tests/postgres_server.py).
TEST_SYSTEM_PACKAGES := chromium:chromium npm:npm redis-server:redis-server mcabber:mcabber tmux:tmux prosody:prosody

# The browser tests' JavaScript (independent clients: Strophe.js over BOSH,
# Converse.js over WebSocket), installed from tests/browser/package-lock.json
# into its git-ignored node_modules; a change to the lock file installs again.
BROWSER_DEPS := tests/browser/node_modules/.package-lock.json

# The webmail chat pane's JavaScript dependency (Strophe.js, npm), installed from
# pane/package-lock.json and copied into the package data (git-ignored), so that
# `pip install .` ships it with the pane's own files (chatgate/web/static/).
PANE_VENDOR := chatgate/web/static/vendor/strophe.esm.js

.PHONY: run cluster test test-deps browser-deps pane node-deps

run: pane $(VENV)/.build-tools
	$(PIP) install --quiet --no-build-isolation .
	exec $(BIN)/twistd --pidfile= --umask 077 -n chatgate --config tap-config.ini

# `make cluster`: redis-server and two chatgate nodes on this machine, to try
# several nodes (README, "Running several nodes"); Ctrl-C stops all three.
# Each node's file is tap-config.ini with overrides, written to var/cluster/nodeN.ini:
# node N has c2s port 530N, the web listener (BOSH) 538N, the admin API 548N;
# both share var/cluster/chatgate.sqlite (the directory) and Redis (archive,
# offline messages, the bus). Redis gets a free port, or CLUSTER_REDIS_PORT=6390.
# Redis runs in its own session (setsid) so that Ctrl-C reaches it only after
# the nodes have stopped.
CLUSTER_REDIS_PORT ?=

define CLUSTER_INI
import configparser, os, sys
n, redis_port = int(sys.argv[1]), sys.argv[2]
here = os.path.abspath(".")
ini = configparser.ConfigParser(interpolation=None)
ini.read("tap-config.ini")
for section, key in (("tls", "certificate"), ("tls", "key")):
    ini[section][key] = os.path.join(here, ini[section].get(key))
overrides = {
    "xmpp": {"interfaces": "127.0.0.1", "port": 5300 + n, "extra_ports": "", "direct_tls_port": ""},
    "http": {"port": 5380 + n},
    "admin": {"port": 5480 + n},
    "storage": {"backend": "sqlite", "path": os.path.join(here, "var/cluster/chatgate.sqlite"),
                "redis_host": "127.0.0.1", "redis_port": redis_port},
    "archive": {"backend": "redis", "offline_backend": "redis"},
    "cluster": {"backend": "redis", "node_id": f"node{n}"},
    # both nodes sign and accept the same upload slots; a secret of this one try only
    "upload": {"secret": redis_port + "-" + "make-cluster-upload-secret-of-this-machine"},
}
for section, values in overrides.items():
    if not ini.has_section(section):
        ini.add_section(section)
    for key, value in values.items():
        ini[section][key] = str(value)
ini.write(sys.stdout)
endef
export CLUSTER_INI

# Waits (30 s at most) until 127.0.0.1:<port> accepts connections: `python -c "$$CLUSTER_WAIT" <port> <name>`.
define CLUSTER_WAIT
import socket, sys, time
end = time.monotonic() + 30
while time.monotonic() < end:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(f"{sys.argv[2]} did not start on port {sys.argv[1]}")
endef
export CLUSTER_WAIT

cluster: pane $(VENV)/.build-tools
	@command -v redis-server >/dev/null 2>&1 || { echo "make cluster needs redis-server (apt-get install redis-server)"; exit 1; }
	$(PIP) install --quiet --no-build-isolation .
	@set -e; mkdir -p var/cluster; chmod 700 var/cluster; \
	port="$(CLUSTER_REDIS_PORT)"; \
	[ -n "$$port" ] || port=$$($(BIN)/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
	for n in 1 2; do $(BIN)/python -c "$$CLUSTER_INI" $$n $$port > var/cluster/node$$n.ini; done; \
	nodes=""; redis=""; \
	trap '[ -z "$$nodes" ] || { kill $$nodes 2>/dev/null; wait $$nodes || true; }; \
		kill $$redis 2>/dev/null || true; wait || true' EXIT INT TERM; \
	setsid redis-server --bind 127.0.0.1 --port $$port --dir var/cluster --appendonly yes --save '' \
		--logfile redis.log --daemonize no & redis="$$!"; \
	$(BIN)/python -c "$$CLUSTER_WAIT" $$port redis-server; \
	for n in 1 2; do \
		$(BIN)/twistd --pidfile= --umask 077 -n --logfile var/cluster/node$$n.log chatgate \
			--config var/cluster/node$$n.ini & nodes="$$nodes $$!"; \
		$(BIN)/python -c "$$CLUSTER_WAIT" 530$$n node$$n; \
	done; \
	echo "redis-server on 127.0.0.1:$$port; node1: c2s 5301, BOSH http://127.0.0.1:5381/http-bind;" \
		"node2: c2s 5302, BOSH http://127.0.0.1:5382/http-bind; logs in var/cluster/. Ctrl-C stops them."; \
	wait

test: test-deps browser-deps pane $(VENV)/.build-tools
	$(PIP) install --quiet --no-build-isolation -e '.[test]'
	$(BIN)/pytest -q

test-deps:
	@missing=""; \
	for dep in $(TEST_SYSTEM_PACKAGES); do \
		command -v "$${dep%%:*}" >/dev/null 2>&1 || missing="$$missing $${dep#*:}"; \
	done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
		|| missing="$$missing postgresql"; \
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
