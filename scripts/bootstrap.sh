#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: Debian packages, the virtual environment and the
# project's Python packages (pinned by constraints.txt). Kafka jars are fetched by
# `loadshape kafka up` itself (Maven). Safe to run again; it does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(openjdk-17-jre-headless maven prometheus prometheus-alertmanager)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Java and Maven may come from elsewhere (e.g. an SDK manager); only install when absent.
if command -v java >/dev/null && java -version 2>&1 | grep -qE 'version "(17|2[0-9])'; then
  missing=("${missing[@]/openjdk-17-jre-headless}")
fi
command -v mvn >/dev/null && missing=("${missing[@]/maven}")
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian packages start their own daemons on the default ports; tests start their own.
  for svc in prometheus prometheus-alertmanager prometheus-node-exporter; do
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || $SUDO service "$svc" stop >/dev/null 2>&1 || true
  done
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
  rm -f .venv/.installed-* && touch "$stamp"
fi
