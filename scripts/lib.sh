# Shared set-up steps for scripts/up and scripts/test. Source it; each function
# is idempotent and quick when its work is already done.

# Debian packages the test suite drives for real: the interop clients (SCEP and OCSP), the HSM,
# a Docker engine with docker-compose and debootstrap for the compose test, and Chromium with its
# driver for the console's browser tests; wrk is bench/ocsp.py's load generator.
SCEPLINE_DEBIAN_PACKAGES="scep certmonger dbus strongswan-pki libstrongswan-standard-plugins \
libstrongswan-extra-plugins softhsm2 opensc openssl gnutls-bin docker.io docker-compose debootstrap \
chromium chromium-driver wrk"

log() { printf '>> %s\n' "$*" >&2; }

ensure_uv() {
    if command -v uv >/dev/null 2>&1; then return; fi
    log "installing uv"
    python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
    export PATH="$HOME/.local/bin:$PATH"
}

ensure_python_deps() {
    ensure_uv
    log "syncing Python dependencies from uv.lock"
    uv sync --locked --quiet
}

ensure_debian_packages() {
    local missing=""
    for package in $SCEPLINE_DEBIAN_PACKAGES; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing="$missing $package"
    done
    [ -z "$missing" ] && return
    log "installing Debian packages:$missing"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
    local port=$1 name=$2
    for _ in $(seq 1 60); do
        port_open "$port" && return 0
        sleep 1
    done
    log "$name did not come up on port $port"
    return 1
}

ensure_postgres() {
    port_open 5432 && return
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    wait_for_port 5432 PostgreSQL
}

ensure_rabbitmq() {
    port_open 5672 && return
    log "starting RabbitMQ"
    rabbitmq-server -detached
    wait_for_port 5672 RabbitMQ
}

# Started only if it is not answering already. A Docker engine that cannot start is
# not fatal here: the compose test then fails (under CI) with the reason.
ensure_docker() {
    docker info >/dev/null 2>&1 && return
    log "starting the Docker engine (log: /var/log/dockerd.log)"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo sh -c 'nohup dockerd >>/var/log/dockerd.log 2>&1 &'
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return
        sleep 1
    done
    log "the Docker engine did not start; see /var/log/dockerd.log"
}
