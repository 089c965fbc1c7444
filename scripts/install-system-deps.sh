#!/usr/bin/env bash
# Debian packages the tests and benchmarks use. Installs only what is missing, so
# a second run costs nothing; without root or apt-get it says what to install.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have jq || need+=(jq)
have flock || need+=(util-linux)
# The service tests: socket activation and unit checks.
have systemd-socket-activate && have systemd-analyze || need+=(systemd)
# The container tests: a private Docker engine, a local registry, a busybox image.
have dockerd || [ -x /usr/sbin/dockerd ] || need+=(docker.io)
have docker-registry || need+=(docker-registry)
# (static: it is the whole image; Debian's plain busybox needs the host's libc)
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need+=(busybox-static)
# The editor tests: Neovim (Debian's is 0.7+) headless and in a real terminal (tmux); Node
# and npm for the VS Code extension, which is also tested in a real VS Code: code-server
# from npm (its native modules build with g++, make and the Kerberos headers; Debian's rg
# stands in for the ripgrep it would download) driven through Debian's Chromium.
have nvim || need+=(neovim)
have tmux || need+=(tmux)
have node || need+=(nodejs)
have npm || need+=(npm)
have g++ || need+=(g++)
have make || need+=(make)
have rg || need+=(ripgrep)
[ -e /usr/include/gssapi/gssapi.h ] || need+=(libkrb5-dev)
[ -x /usr/lib/chromium/chromium ] || need+=(chromium)
# The PostgreSQL store's tests: a private cluster (initdb + pg_ctl), and libfaketime to run
# one lokid with a host clock that is wrong (the queue must keep the database's time).
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || need+=(libfaketime)
# The peer benchmark (bench/bench_peers.py): BullMQ's Redis, run privately by the bench.
have redis-server || need+=(redis-server)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if have apt-get && [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
    echo "missing Debian packages: ${need[*]} (apt-get install -y ${need[*]})" >&2
    exit 1
fi
