#!/bin/sh
# Install what the load benchmark (bench/run.py) needs; safe to run again.
#
#   - Prosody and ejabberd from Debian (the reference servers), never assumed
#     present; the benchmark runs them from throw-away configs, so their
#     system services are not needed: if installing them started a service
#     that was not running before, it is stopped again here (and only it).
#   - lua-dbi-sqlite3 is not needed: Prosody keeps users and the archive in
#     its internal (file) storage, ejabberd in Mnesia, their defaults.
#   - py-spy in the project's venv, for the profile under S2.
#
# Usage: sh bench/setup.sh    (as root; apt-get update is run when a package is missing)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
venv="$here/../.venv"

# whether the system service is up, from its pid file (asking ejabberdctl would
# start an Erlang node, and with it epmd)
running() {
    case $1 in
        prosody) pidfile=/run/prosody/prosody.pid ;;
        ejabberd) pidfile=/run/ejabberd/ejabberd.pid ;;
    esac
    [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

missing=""
command -v prosody >/dev/null 2>&1 || missing="$missing prosody"
command -v ejabberdctl >/dev/null 2>&1 || missing="$missing ejabberd"
command -v taskset >/dev/null 2>&1 || missing="$missing util-linux"

if [ -n "$missing" ]; then
    prosody_before=no; running prosody && prosody_before=yes
    ejabberd_before=no; running ejabberd && ejabberd_before=yes
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
    # Stop only what this install started.
    if [ "$prosody_before" = no ] && running prosody; then
        echo "setup: stopping the prosody service the install started"
        service prosody stop >/dev/null 2>&1 || true
    fi
    if [ "$ejabberd_before" = no ] && running ejabberd; then
        echo "setup: stopping the ejabberd service the install started"
        service ejabberd stop >/dev/null 2>&1 || true
    fi
fi

if [ -x "$venv/bin/python" ] && ! [ -x "$venv/bin/py-spy" ]; then
    "$venv/bin/python" -m pip install -q py-spy
fi

dpkg-query -W -f='prosody ${Version}\n' prosody
dpkg-query -W -f='ejabberd ${Version}\n' ejabberd
if [ -x "$venv/bin/py-spy" ]; then "$venv/bin/py-spy" --version; fi
