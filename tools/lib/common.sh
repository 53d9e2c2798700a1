# Shared by tools/run and tools/test: Debian packages, the virtualenv, local services.
# Every step is guarded so a re-run on a prepared machine takes seconds.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${FABRIC_VENV:-$ROOT/.venv}"

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_debs PKG...: install the Debian packages that are missing (one apt run).
ensure_debs() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_venv EXTRAS: a virtualenv with fabric installed editable, reinstalled only
# when setup.py changed since the last install.
ensure_venv() {
    local extras="$1"
    local stamp="$VENV/.fabric-installed"
    local want
    want="$(sha256sum "$ROOT/setup.py" | cut -d' ' -f1) $extras"
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating virtualenv $VENV"
        python3 -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "installing fabric$extras into $VENV"
        "$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
        "$VENV/bin/pip" install -q -e "$ROOT$extras" 2>&1 | grep -vE '^WARNING: Location|BuildBackendWarning|^ +(!!|\*+|Please be careful|name as your package|with strategy)|^ *$' >&2 || true
        "$VENV/bin/python" -c "import fabric" || { say "fabric did not install"; exit 1; }
        echo "$want" > "$stamp"
    fi
}

# ensure_real_guest_packages: what real guests and the linux network driver need (libvirt,
# QEMU, dnsmasq, busybox, nftables; headers to build libvirt-python), and the libvirt-qemu
# user that libvirt's QEMU driver looks up before it reads qemu.conf (HOSTNOTES.md).
ensure_real_guest_packages() {
    ensure_debs python3-venv libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils \
        dnsmasq-base dnsmasq-utils busybox-static libvirt-dev pkg-config iproute2 nftables gcc python3-dev "$@"
    getent passwd libvirt-qemu >/dev/null || as_root useradd --system --no-create-home --user-group \
        --shell /usr/sbin/nologin libvirt-qemu
    mkdir -p /var/log/libvirt 2>/dev/null || as_root mkdir -p /var/log/libvirt
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT SECONDS: true once something listens on 127.0.0.1:PORT.
wait_port() {
    local port="$1" deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        port_open "$port" && return 0
        sleep 1
    done
    return 1
}

# ensure_services: RabbitMQ, PostgreSQL and MariaDB installed and listening on their
# standard local ports (DESIGN.md section 7). Returns non-zero naming what is missing.
ensure_services() {
    local failed=()
    if ! port_open 5672; then
        command -v rabbitmq-server >/dev/null || ensure_debs rabbitmq-server
        say "starting RabbitMQ"
        as_root rabbitmq-server -detached >/dev/null 2>&1 || true
        wait_port 5672 60 || failed+=("RabbitMQ (127.0.0.1:5672)")
    fi
    if ! port_open 5432; then
        ls /etc/postgresql >/dev/null 2>&1 || ensure_debs postgresql
        say "starting PostgreSQL"
        as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >/dev/null 2>&1 || true
        wait_port 5432 60 || failed+=("PostgreSQL (127.0.0.1:5432)")
    fi
    if ! port_open 3306; then
        [ -x /usr/sbin/mariadbd ] || ensure_debs mariadb-server
        say "starting MariaDB"
        as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
        as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd >/dev/null 2>&1 || true
        wait_port 3306 60 || failed+=("MariaDB (127.0.0.1:3306)")
    fi
    if [ ${#failed[@]} -ne 0 ]; then
        say "not reachable: ${failed[*]}"
        return 1
    fi
    ensure_postgres_connections
}

# The suite runs on parallel workers, each starting clouds of worker processes with
# connection pools: PostgreSQL's stock limit of 100 connections is too few. Raised once
# (ALTER SYSTEM, then a restart, only when the running server has less).
POSTGRES_MAX_CONNECTIONS=400
ensure_postgres_connections() {
    local current
    current=$(psql -h 127.0.0.1 -U postgres -Atc "show max_connections" 2>/dev/null) || return 0
    [ "$current" -ge "$POSTGRES_MAX_CONNECTIONS" ] && return 0
    say "raising PostgreSQL's max_connections from $current to $POSTGRES_MAX_CONNECTIONS (a restart)"
    psql -h 127.0.0.1 -U postgres -qc "ALTER SYSTEM SET max_connections = $POSTGRES_MAX_CONNECTIONS" >/dev/null
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main restart >/dev/null 2>&1 || true
    wait_port 5432 60
}
