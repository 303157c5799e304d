# Shared by scripts/test, scripts/testenv and scripts/quickstart: install what
# is missing and bring up the real parts berth talks to. Source it; every
# function prints what it does to stderr.

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

log() { printf '%s %s\n' "[$(date +%H:%M:%S)]" "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_packages: install the Debian packages whose commands are missing.
ensure_packages() {
  local want=()
  [ -x "$PG_BIN/initdb" ] || want+=(postgresql-15)
  command -v psql >/dev/null || want+=(postgresql-client-15)
  command -v docker >/dev/null || want+=(docker.io)
  command -v docker-registry >/dev/null || want+=(docker-registry)
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || want+=(busybox-static)
  command -v python3 >/dev/null || want+=(python3)
  command -v curl >/dev/null || want+=(curl ca-certificates)
  command -v promtool >/dev/null || want+=(prometheus)
  command -v docker-compose >/dev/null || want+=(docker-compose)
  command -v git >/dev/null || want+=(git)
  command -v systemd-analyze >/dev/null || want+=(systemd)
  if [ ${#want[@]} -gt 0 ]; then
    log "installing ${want[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >&2
  fi
}

# ensure_docker: make the engine answer on its socket, starting dockerd when
# it does not. A dockerd started here runs until the machine stops.
ensure_docker() {
  if docker info >/dev/null 2>&1; then return 0; fi
  log "the Docker Engine does not answer: starting dockerd"
  as_root sh -c 'nohup dockerd >/var/log/berth-dockerd.log 2>&1 &'
  local i
  for i in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  die "dockerd did not answer within 60s (see /var/log/berth-dockerd.log)"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_postgres DIR PORT: a throwaway cluster in DIR listening on
# 127.0.0.1:PORT with trust auth and durability off (tests only).
start_postgres() {
  local dir=$1 port=$2 run=()
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    run=(runuser -u postgres --)
  fi
  "${run[@]}" "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  "${run[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" \
    start >/dev/null || { cat "$dir/postgres.log" >&2; die "postgres did not start"; }
  log "postgres on 127.0.0.1:$port (data in $dir/data)"
}

stop_postgres() {
  local dir=$1 run=()
  [ -f "$dir/data/postmaster.pid" ] || return 0
  [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
  "${run[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
}

# start_registry DIR PORT: Debian's docker-registry on 127.0.0.1:PORT with its
# storage in DIR. The engine trusts 127.0.0.0/8 without TLS.
start_registry() {
  local dir=$1 port=$2
  mkdir -p "$dir/storage"
  cat >"$dir/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YML
  nohup docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
  echo $! >"$dir/registry.pid"
  local i
  for i in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && { log "registry on 127.0.0.1:$port"; return 0; }
    sleep 0.2
  done
  cat "$dir/registry.log" >&2
  die "the registry did not answer on 127.0.0.1:$port"
}

stop_registry() {
  local dir=$1
  [ -f "$dir/registry.pid" ] || return 0
  kill "$(cat "$dir/registry.pid")" 2>/dev/null || true
  rm -f "$dir/registry.pid"
}

# build_agent_images REGISTRY LABEL: build the test agent images FROM scratch
# with Debian's static busybox, label them, and push them to REGISTRY as
# berth-test/agent:{v1,v2,plain,broken}. Prints nothing on stdout.
build_agent_images() {
  local registry=$1 label=$2 ctx
  ctx=$(mktemp -d)
  cp -r "$(dirname "${BASH_SOURCE[0]}")/../tests/images/agent/." "$ctx/"
  cp /bin/busybox "$ctx/busybox"
  local name variant target
  for spec in v1:v1:health v2:v2:health plain:v1:plain broken:v3:broken; do
    IFS=: read -r name variant target <<<"$spec"
    docker build -q --target "$target" --build-arg "AGENT_VARIANT=$variant" \
      --label "$label" -t "$registry/berth-test/agent:$name" "$ctx" >"$ctx/build.log" 2>&1 \
      || { cat "$ctx/build.log" >&2; die "building the test agent image $name failed"; }
    docker push -q "$registry/berth-test/agent:$name" >/dev/null \
      || die "pushing $registry/berth-test/agent:$name failed"
  done
  rm -rf "$ctx"
  log "test images pushed: $registry/berth-test/agent:{v1,v2,plain,broken}"
}

# remove_berth_hosts PREFIX: remove the containers, volumes and networks
# berth made for test host ids starting with PREFIX (their berth.host label).
remove_berth_hosts() {
  local prefix=$1 kind ids
  for kind in container volume network; do
    case $kind in
      container) ids=$(docker ps -a --filter label=berth.host --format '{{.ID}} {{.Label "berth.host"}}') ;;
      volume) ids=$(docker volume ls --filter label=berth.host --format '{{.Name}} {{.Label "berth.host"}}') ;;
      network) ids=$(docker network ls --filter label=berth.host --format '{{.ID}} {{.Label "berth.host"}}') ;;
    esac
    ids=$(printf '%s\n' "$ids" | awk -v p="$prefix" 'index($2, p) == 1 {print $1}')
    [ -z "$ids" ] && continue
    case $kind in
      container) docker rm -f $ids >/dev/null 2>&1 ;;
      volume) docker volume rm -f $ids >/dev/null 2>&1 ;;
      network) docker network rm $ids >/dev/null 2>&1 ;;
    esac
  done
  return 0
}

# remove_labelled LABEL: remove the containers, volumes, networks and images
# carrying LABEL (key=value), and nothing else.
remove_labelled() {
  local label=$1 ids
  ids=$(docker ps -aq --filter "label=$label")
  [ -n "$ids" ] && { docker rm -f $ids >/dev/null 2>&1 || true; }
  ids=$(docker volume ls -q --filter "label=$label")
  [ -n "$ids" ] && { docker volume rm -f $ids >/dev/null 2>&1 || true; }
  ids=$(docker network ls -q --filter "label=$label")
  [ -n "$ids" ] && { docker network rm $ids >/dev/null 2>&1 || true; }
  # An image built FROM another of the run's (a test's own bad image) is
  # a child: the engine refuses its parent while it is there, so images
  # go in passes until none is left or a pass removes nothing.
  local pass before
  for pass in 1 2 3 4 5; do
    ids=$(docker images -q --filter "label=$label" | sort -u)
    [ -z "$ids" ] && break
    before=$ids
    docker rmi -f $ids >/dev/null 2>&1 || true
    [ "$(docker images -q --filter "label=$label" | sort -u)" = "$before" ] && break
  done
  return 0
}
