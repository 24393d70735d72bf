#!/usr/bin/env bash
# cloudlet's OpenStack integration-test cloud: a minimal REAL OpenStack control plane from Debian
# bookworm's packages (OpenStack Zed) for tests driven by openstacksdk: keystone, glance (file store),
# placement, nova (api, conductor, scheduler, compute with the fake virt driver), neutron-server (ML2,
# router service plugin, NO agents at all) and heat (api + engine), on a private MariaDB and a private
# RabbitMQ.  Everything listens on 127.0.0.1 only; nothing in /etc is used or changed (apart from apt
# installing the packages): configs, databases, RabbitMQ's mnesia, images and logs live under $OSCI_DIR.
#
#   sudo bash cloud.sh [up]    # idempotent: if the cloud of this OSCI_DIR is up and healthy, say so and
#                              # exit 0 at once; otherwise stop what is left of it, wipe it, install
#                              # (apt), configure + db-sync, start and wait until it is ready
#   sudo bash cloud.sh stop    # stop every process this script started (by process group id)
#   sudo bash cloud.sh status  # processes + health check; exit 0 only if healthy
#   sudo bash cloud.sh mem     # RSS and PSS of all processes of the cloud
#
# Environment: OSCI_DIR (default /var/tmp/cloudlet-osci), OSCI_PORT_OFFSET (default 0: every port +N, to
# run next to another cloud on one host; 10000 and 11000 are known to work, 20000 clashes with RabbitMQ's
# default dist port), OSCI_SKIP_APT=1 (packages already installed).
#
# Credentials afterwards: $OSCI_DIR/clouds.yaml with clouds "osci-admin" (admin/secret, project admin) and
# "osci-demo" (demo/secret, project demo, roles member + heat_stack_owner).  Also created: the shared
# external flat network "public" (172.24.4.0/24, no DHCP, router:external and shared, so demo can put
# ports on it), public flavors m1.tiny/small/medium/large, public images "ubuntu-22.04" and "cirros"
# (tiny raw files), raised quotas for project demo.
#
# Adapted from the verified reference openstack-test-cloud.sh (see its notes for the gotchas fixed here).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C.UTF-8

OSCI_DIR=${OSCI_DIR:-/var/tmp/cloudlet-osci}
O=${OSCI_PORT_OFFSET:-0}
PY=/usr/bin/python3                       # Debian's python: the OpenStack modules live in its dist-packages
P_KS=$((5000+O)) P_GLANCE=$((9292+O)) P_PLACEMENT=$((8778+O)) P_NOVA=$((8774+O)) P_NEUTRON=$((9696+O))
P_HEAT=$((8004+O)) P_HEAT_CFN=$((8000+O))
P_DB=$((3306+O)) P_RMQ=$((5672+O)) P_RMQ_DIST=$((25672+O)) P_EPMD=$((4369+O))
ALL_PORTS="$P_KS $P_GLANCE $P_PLACEMENT $P_NOVA $P_NEUTRON $P_HEAT $P_DB $P_RMQ $P_RMQ_DIST $P_EPMD"
HOST_NAME=osci-compute                    # nova's [DEFAULT] host == neutron's binding host
ETC=$OSCI_DIR/etc RUN=$OSCI_DIR/run LOG=$OSCI_DIR/log STATE=$OSCI_DIR/state
KS=http://127.0.0.1:$P_KS/v3
DB="mysql+pymysql://os:secret@127.0.0.1:$P_DB"
RMQ_URL="rabbit://guest:guest@127.0.0.1:$P_RMQ/"
# every daemon of a complete cloud, i.e. the pid files that "up" leaves in $RUN
SERVICES="mariadb epmd rabbitmq keystone placement nova-api glance-api neutron-server heat-api
          nova-conductor nova-scheduler nova-compute heat-engine"
# a built cloud is only reused if it was built by this very script with the same port offset
SCRIPT_SHA=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
STAMP_WANT="offset=$O script=$SCRIPT_SHA"

now() { date +%s.%N; }
since() { $PY -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
say() { echo "[osci $(date +%T)] $*"; }

# --- process bookkeeping: every daemon runs in its own session (setsid), so pid == process group id, and
# --- "stop" kills exactly those groups (never pkill/killall: other clouds may run on the same host).
# --- Next to NAME.pid, NAME.start holds the process start time (/proc/PID/stat field 22): a recycled pid
# --- (after a reboot, say) is then not mistaken for ours, and is never killed.
pstart() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }
start_bg() { # NAME CMD...   (env vars may be set by the caller through `env`)
  local name=$1 pid; shift
  # 9>&-: the daemons must not inherit the lock on $OSCI_DIR/.lock
  setsid "$@" >"$LOG/$name.log" 2>&1 < /dev/null 9>&- &
  pid=$!
  echo "$pid" > "$RUN/$name.pid"
  pstart "$pid" > "$RUN/$name.start"
}
alive() { # NAME -> 0 if the recorded process is still the one we started and is running
  local f=$RUN/$1.pid pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  [ -e "/proc/$pid/stat" ] || return 1     # (not kill -0: "status" also works for non-root users)
  [ ! -s "$RUN/$1.start" ] || [ "$(pstart "$pid")" = "$(cat "$RUN/$1.start")" ]
}
term_groups() { # NAME... : SIGTERM the recorded process groups, wait (<= $STOP_WAIT s) until they are gone,
  local name pid groups="" i g left="" names=""   # then SIGKILL what is left
  for name in "$@"; do
    if alive "$name"; then
      pid=$(cat "$RUN/$name.pid"); groups="$groups $pid:$name"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for i in $(seq $((STOP_WAIT * 5))); do
    left=""
    for g in $groups; do kill -0 -- "-${g%%:*}" 2>/dev/null && left="$left $g"; done
    [ -n "$left" ] || break
    sleep 0.2
  done
  for g in $left; do
    kill -KILL -- "-${g%%:*}" 2>/dev/null || kill -KILL "${g%%:*}" 2>/dev/null || true; names="$names ${g#*:}"
  done
  [ -z "$names" ] || say "still there ${STOP_WAIT} s after SIGTERM, so SIGKILLed:$names"
}
stop_all() { # [SECONDS]: the OpenStack services first, then what they use (MariaDB, RabbitMQ, epmd)
  local STOP_WAIT=${1:-8}
  [ -d "$RUN" ] || return 0
  rm -f "$RUN/ready"
  local f name first="" last=""
  for f in "$RUN"/*.pid; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .pid)
    case $name in mariadb|rabbitmq|epmd) last="$last $name" ;; *) first="$first $name" ;; esac
  done
  # shellcheck disable=SC2086
  term_groups $first
  # shellcheck disable=SC2086
  term_groups $last
  rm -f "$RUN"/*.pid "$RUN"/*.start
  return 0
}
mem_report() { # sum of RSS and PSS over every process in the recorded process groups
  $PY - "$RUN" <<'PY'
import os, sys, glob
run = sys.argv[1]
groups = {}
for f in glob.glob(os.path.join(run, "*.pid")):
    groups[int(open(f).read().strip())] = os.path.basename(f)[:-4]
rows = {}
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        pgid = os.getpgid(int(p))
    except OSError:
        continue
    if pgid not in groups:
        continue
    try:
        kv = dict(l.split(":", 1) for l in open(f"/proc/{p}/smaps_rollup").read().splitlines()[1:])
        rss, pss = int(kv["Rss"].split()[0]), int(kv["Pss"].split()[0])
    except Exception:
        continue
    n = rows.setdefault(groups[pgid], [0, 0, 0])
    n[0] += 1; n[1] += rss; n[2] += pss
tr = tp = tn = 0
for name, (n, rss, pss) in sorted(rows.items()):
    print(f"{name:18s} procs={n:2d} rss={rss/1024:7.1f} MiB pss={pss/1024:7.1f} MiB")
    tn += n; tr += rss; tp += pss
print(f"{'TOTAL':18s} procs={tn:2d} rss={tr/1024:7.1f} MiB pss={tp/1024:7.1f} MiB")
PY
}

# The keystoneauth helper (catalog, waits, cloud resources, health check): one python process per step.
write_helper() {
  mkdir -p "$OSCI_DIR"
  cat > "$OSCI_DIR/osci_helper.py.tmp" <<'EOF'
import json, sys, time
from keystoneauth1 import session
from keystoneauth1.identity import v3

KS, PORTS = sys.argv[2], json.loads(sys.argv[3])


def sess(user="admin", project="admin"):
    return session.Session(auth=v3.Password(auth_url=KS, username=user, password="secret", project_name=project,
                                            user_domain_id="default", project_domain_id="default"))


def wait(fn, what, timeout=300):
    t, last = time.time(), None
    while True:
        try:
            r = fn()
            if r:
                return r
        except Exception as e:  # noqa
            last = e
        if time.time() - t > timeout:
            sys.exit(f"timeout waiting for {what} (last error: {last})")
        time.sleep(0.5)


def ep(stype):
    return dict(endpoint_filter={"service_type": stype, "interface": "public"})


def find_or_create(s, coll, key, name, body, **filt):
    found = s.get(f"/{coll}?name={name}", **ep("identity"), **filt).json()[coll]
    if found:
        return found[0]
    return s.post(f"/{coll}", json={key: body}, **ep("identity")).json()[key]


cmd = sys.argv[1]
if cmd == "catalog":
    s = wait(lambda: sess() if sess().get_token() else None, "keystone")
    for name, stype, port, path in [("glance", "image", PORTS["glance"], ""),
                                    ("placement", "placement", PORTS["placement"], ""),
                                    ("nova", "compute", PORTS["nova"], "/v2.1"),
                                    ("neutron", "network", PORTS["neutron"], ""),
                                    ("heat", "orchestration", PORTS["heat"], "/v1/%(tenant_id)s")]:
        svc = s.post("/services", json={"service": {"name": name, "type": stype}}, **ep("identity")).json()["service"]
        for iface in ("public", "internal", "admin"):
            s.post("/endpoints", json={"endpoint": {"service_id": svc["id"], "interface": iface, "region_id": "RegionOne",
                                                     "url": f"http://127.0.0.1:{port}{path}"}}, **ep("identity"))
    proj = find_or_create(s, "projects", "project", "demo", {"name": "demo", "domain_id": "default"})
    user = find_or_create(s, "users", "user", "demo", {"name": "demo", "password": "secret", "domain_id": "default",
                                                       "default_project_id": proj["id"]})
    # heat: stack owners get heat_stack_owner (the default policy only needs member, but it is the classic
    # setup); heat_stack_user is the role heat gives the users it creates for some resources
    for rname in ("member", "heat_stack_owner"):
        role = find_or_create(s, "roles", "role", rname, {"name": rname})
        s.put(f"/projects/{proj['id']}/users/{user['id']}/roles/{role['id']}", **ep("identity"))
    find_or_create(s, "roles", "role", "heat_stack_user", {"name": "heat_stack_user"})
    # heat's stack_user_domain with its admin (heat.conf: stack_user_domain_name / stack_domain_admin)
    dom = find_or_create(s, "domains", "domain", "heat", {"name": "heat", "description": "heat stack users"})
    hadm = find_or_create(s, "users", "user", "heat_domain_admin", {"name": "heat_domain_admin", "password": "secret",
                                                                  "domain_id": dom["id"]}, params={"domain_id": dom["id"]})
    admin_role = s.get("/roles?name=admin", **ep("identity")).json()["roles"][0]
    s.put(f"/domains/{dom['id']}/users/{hadm['id']}/roles/{admin_role['id']}", **ep("identity"))
elif cmd == "wait-apis":
    s = sess()
    for stype in ("image", "placement", "compute", "network", "orchestration"):
        wait(lambda: s.get("/", **ep(stype), raise_exc=False).status_code < 500, stype)
elif cmd == "wait-compute":
    # nova-compute registered its resource provider in placement and its service is up
    s = sess()
    wait(lambda: s.get("/resource_providers", **ep("placement")).json()["resource_providers"],
         "placement resource provider")
    wait(lambda: any(x["state"] == "up" for x in s.get("/os-services?binary=nova-compute",
                     **ep("compute")).json()["services"]), "nova-compute up")
elif cmd == "wait-hypervisor":
    s = sess()
    wait(lambda: s.get("/os-hypervisors", **ep("compute")).json()["hypervisors"], "hypervisor")
elif cmd == "resources":
    # everything the cloudlet provider's tests expect; idempotent (looked up by name first)
    s = sess()
    nf, cf, gf = ep("network"), ep("compute"), ep("image")
    # external network, shared: the "no-router" data path puts the demo project's LB ports right on it
    nets = s.get("/v2.0/networks?name=public", **nf).json()["networks"]
    if nets:
        net = nets[0]
        if not (net["router:external"] and net["shared"]):
            s.put(f"/v2.0/networks/{net['id']}", json={"network": {"router:external": True, "shared": True}}, **nf)
    else:
        net = s.post("/v2.0/networks", json={"network": {"name": "public", "router:external": True, "shared": True,
                     "provider:network_type": "flat", "provider:physical_network": "public"}}, **nf).json()["network"]
    if not s.get(f"/v2.0/subnets?network_id={net['id']}", **nf).json()["subnets"]:
        s.post("/v2.0/subnets", json={"subnet": {"name": "public-subnet", "network_id": net["id"], "ip_version": 4,
               "cidr": "172.24.4.0/24", "gateway_ip": "172.24.4.1", "enable_dhcp": False}}, **nf)
    # flavors (public)
    have = {f["name"] for f in s.get("/flavors?is_public=None", **cf).json()["flavors"]}
    for name, vcpus, ram, disk in [("m1.tiny", 1, 512, 1), ("m1.small", 1, 2048, 20),
                                   ("m1.medium", 2, 4096, 40), ("m1.large", 4, 8192, 80)]:
        if name not in have:
            s.post("/flavors", json={"flavor": {"name": name, "vcpus": vcpus, "ram": ram, "disk": disk,
                                                "os-flavor-access:is_public": True}}, **cf)
    # images (public, tiny raw files: the fake virt driver never reads them)
    for name in ("ubuntu-22.04", "cirros"):
        imgs = s.get(f"/v2/images?name={name}", **gf).json()["images"]
        img = imgs[0] if imgs else s.post("/v2/images", json={"name": name, "disk_format": "raw",
                                                               "container_format": "bare", "visibility": "public"},
                                          **gf).json()
        if img["status"] == "queued":
            s.put(f"/v2/images/{img['id']}/file", data=name.encode().ljust(1024, b"\0"),
                  headers={"Content-Type": "application/octet-stream"}, **gf)
        wait(lambda: s.get(f"/v2/images/{img['id']}", **gf).json()["status"] == "active", f"image {name}", 60)
    # quotas of project demo: high enough that tests never hit the defaults
    proj = s.get("/projects?name=demo", **ep("identity")).json()["projects"][0]["id"]
    s.put(f"/os-quota-sets/{proj}", json={"quota_set": {"instances": 200, "cores": 400, "ram": 1000000}}, **cf)
    s.put(f"/v2.0/quotas/{proj}", json={"quota": {"port": 1000, "network": 100, "subnet": 100, "router": 50,
                                                  "floatingip": 100, "security_group": 100,
                                                  "security_group_rule": 1000}}, **nf)
elif cmd == "health":
    # as osci-demo: keystone (token), nova (list servers), neutron, heat, glance must all answer
    s = sess("demo", "demo")
    kw = dict(timeout=15)
    s.get_token()
    s.get("/servers", **ep("compute"), **kw).json()["servers"]
    assert s.get("/v2.0/networks?name=public", **ep("network"), **kw).json()["networks"], "no network 'public'"
    s.get("/stacks", **ep("orchestration"), **kw).json()["stacks"]
    s.get("/v2/images?limit=1", **ep("image"), **kw).json()["images"]
    print("healthy: keystone, nova (servers), neutron (network 'public'), heat (stacks), glance answer as osci-demo")
EOF
  mv -f "$OSCI_DIR/osci_helper.py.tmp" "$OSCI_DIR/osci_helper.py"
}
PORTS="{\"glance\": $P_GLANCE, \"placement\": $P_PLACEMENT, \"nova\": $P_NOVA, \"neutron\": $P_NEUTRON, \"heat\": $P_HEAT}"
H() { $PY "$OSCI_DIR/osci_helper.py" "$1" "$KS" "$PORTS"; }

# healthy [-v]: built by this script with this offset, every recorded daemon alive, the APIs answer
healthy() {
  local verbose=${1:-} s ok=0
  local stamp; stamp=$(cat "$RUN/ready" 2>/dev/null || true)
  if [ -z "$stamp" ]; then
    [ -z "$verbose" ] || echo "no complete cloud in $OSCI_DIR (never built, stopped, or its build did not finish)"
    ok=1
  elif [ "$stamp" != "$STAMP_WANT" ]; then
    [ -z "$verbose" ] || echo "the cloud in $OSCI_DIR was built by another version of cloud.sh or with another" \
      "OSCI_PORT_OFFSET ('$stamp'; this is '$STAMP_WANT')"
    ok=1
  fi
  for s in $SERVICES; do
    if alive "$s"; then [ -z "$verbose" ] || printf '  %-16s up   pid %s\n' "$s" "$(cat "$RUN/$s.pid")"
    else [ -z "$verbose" ] || printf '  %-16s DOWN\n' "$s"; ok=1; fi
  done
  [ $ok = 0 ] || return 1
  if [ -n "$verbose" ]; then timeout 60 "$PY" "$OSCI_DIR/osci_helper.py" health "$KS" "$PORTS"
  else timeout 60 "$PY" "$OSCI_DIR/osci_helper.py" health "$KS" "$PORTS" >/dev/null 2>&1; fi
}

cmd=${1:-up}
case "$cmd" in
  up|stop|mem|status) ;;
  *) echo "usage: $0 [up|stop|mem|status]" >&2; exit 2 ;;
esac
case "$cmd" in
  mem) mem_report; exit 0 ;;
  status)
    write_helper 2>/dev/null || [ -e "$OSCI_DIR/osci_helper.py" ] || { echo "status: no cloud in $OSCI_DIR"; exit 1; }
    echo "OSCI_DIR=$OSCI_DIR OSCI_PORT_OFFSET=$O keystone=$KS"
    if healthy -v; then echo "status: UP and healthy; OS_CLIENT_CONFIG_FILE=$OSCI_DIR/clouds.yaml"; exit 0; fi
    echo "status: NOT healthy (logs: $LOG)"; exit 1 ;;
esac
# up and stop: one at a time per OSCI_DIR (a second "up" waits, then finds the cloud healthy)
mkdir -p "$OSCI_DIR"
exec 9>"$OSCI_DIR/.lock"
flock 9
if [ "$cmd" = stop ]; then stop_all; say "stopped (OSCI_DIR=$OSCI_DIR)"; exit 0; fi

T0=$(now)
trap 'echo "[osci $(date +%T)] FAILED (cloud.sh line $LINENO); the services log to $LOG" >&2' ERR
write_helper
if why=$(healthy -v 2>&1); then
  say "cloud from $OSCI_DIR (port offset $O) is already up and healthy: nothing to do ($(since "$T0")s)"
  say "clouds.yaml: $OSCI_DIR/clouds.yaml"
  exit 0
fi
if ls "$RUN"/*.pid >/dev/null 2>&1; then
  say "the cloud from $OSCI_DIR is not healthy: stopping what is left of it, then rebuilding it.  Why:"
  echo "$why" | grep -v '  up   pid ' | tail -8 | sed 's/^/    /'
  stop_all 2     # its state is wiped next: no need for a graceful shutdown
  say "stopped: $(since "$T0")s"
fi
T0A=$(now)

###############################################################################################
# 1. Packages.  No systemd here: policy-rc.d stops maintainer scripts from starting daemons, and
#    debconf is told not to let dbconfig-common create databases (we do it ourselves below).
#    nova-compute (the package) is NOT installed: it drags in a hypervisor (qemu/libvirt or ironic)
#    through "nova-compute-kvm | nova-compute-hypervisor"; python3-nova already has nova.cmd.compute.
###############################################################################################
if [ "${OSCI_SKIP_APT:-0}" != 1 ]; then
  # only for this install, and only if the machine has none of its own: removed again below
  POLICY_RC_OURS=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; POLICY_RC_OURS=1
  fi
  drop_policy_rc() { if [ "$POLICY_RC_OURS" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }
  {
    for p in keystone glance-common nova-common neutron-common placement-common heat-common heat-api heat-engine; do
      echo "$p $p/dbconfig-install boolean false"
      echo "$p $p/configure_db boolean false"
      echo "$p $p/register-endpoint boolean false"
    done
    # heat's own debconf questions (all default to false already; say so explicitly)
    echo "heat-common heat/configure_db boolean false"
    echo "heat-common heat/configure_with_debconf boolean false"
    echo "heat-common heat/configure_rabbit boolean false"
    echo "heat-common heat/configure_ksat boolean false"
    echo "heat-api heat/configure_api-endpoint boolean false"
  } | debconf-set-selections
  PKGS="mariadb-server python3-pymysql rabbitmq-server uwsgi-plugin-python3 curl
    keystone glance-api placement-api nova-api nova-conductor nova-scheduler neutron-server
    heat-api heat-engine python3-venv"
  # shellcheck disable=SC2086
  if dpkg-query -W -f '${db:Status-Status}\n' $PKGS 2>/dev/null | grep -qvx installed \
     || [ "$(dpkg-query -W -f '${db:Status-Status}\n' $PKGS 2>/dev/null | wc -l)" != "$(echo $PKGS | wc -w)" ]; then
    say "apt-get install (this is the slow, network-bound part)"
    apt-get -o DPkg::Lock::Timeout=900 update -q >/dev/null
    # shellcheck disable=SC2086
    apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends $PKGS \
      >"$OSCI_DIR/apt.log" 2>&1 || { tail -30 "$OSCI_DIR/apt.log"; drop_policy_rc; exit 1; }
  fi
  drop_policy_rc
fi
T_APT=$(since "$T0A"); say "apt: ${T_APT}s"

###############################################################################################
# 2. Wipe and lay out the private state; start MariaDB and RabbitMQ (private instances).
###############################################################################################
T1=$(now)
rm -rf "$OSCI_DIR/etc" "$OSCI_DIR/state" "$OSCI_DIR/log" "$OSCI_DIR/run" "$OSCI_DIR/pylib" "$OSCI_DIR/clouds.yaml"
mkdir -p "$ETC"/{keystone,glance,placement,nova,neutron,heat} "$RUN" "$LOG" "$OSCI_DIR/pylib" \
  "$STATE"/{mysql,rabbit,images,glance-staging,glance-tasks,nova/instances,nova/lock,neutron/lock,heat/lock}
# every port must be free: a leftover from elsewhere would make a service fail in a confusing way later
busy=""
for p in $ALL_PORTS; do ss -Hltn "sport = :$p" | grep -q . && busy="$busy $p"; done
if [ -n "$busy" ]; then
  echo "ERROR: port(s)$busy on this host are in use by processes this script did not start (from $OSCI_DIR)." >&2
  echo "       Stop them, or choose another OSCI_PORT_OFFSET (now $O)." >&2
  for p in $busy; do ss -Hltnp "sport = :$p" >&2 || true; done
  exit 1
fi

# MariaDB: private datadir/port; durability off (it is a throw-away test cloud) -> much faster db syncs.
mariadb-install-db --no-defaults --user=root --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
  --skip-test-db >"$LOG/mariadb-install.log" 2>&1
start_bg mariadb /usr/sbin/mariadbd --no-defaults --user=root --datadir="$STATE/mysql" \
  --socket="$RUN/mysql.sock" --pid-file="$RUN/mariadbd.pidfile" --port=$P_DB --bind-address=127.0.0.1 \
  --skip-name-resolve --skip-log-bin --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 \
  --innodb-buffer-pool-size=128M --max-connections=500 --character-set-server=utf8mb4
# RabbitMQ: run the real server script as root with a private node name, ports and mnesia dir.
# (/usr/sbin/rabbitmq-server would su to the rabbitmq user and use the system-wide node.)
# Our own epmd (Erlang port mapper) on its own port, in the foreground, so that "stop" ends it too
# (rabbitmq-server would otherwise start a detached system-wide "epmd -daemon").  The Erlang
# distribution port would listen on 0.0.0.0 unless told inet_dist_use_interface.
echo '[].' > "$STATE/rabbit/enabled_plugins"
start_bg epmd /usr/bin/epmd -address 127.0.0.1 -port $P_EPMD
start_bg rabbitmq env HOME=/root ERL_EPMD_PORT=$P_EPMD \
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" RABBITMQ_NODENAME=osci@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT=$P_RMQ RABBITMQ_DIST_PORT=$P_RMQ_DIST RABBITMQ_MNESIA_BASE="$STATE/rabbit/mnesia" \
  RABBITMQ_LOG_BASE="$LOG/rabbit" RABBITMQ_ENABLED_PLUGINS_FILE="$STATE/rabbit/enabled_plugins" \
  RABBITMQ_CONFIG_FILE="$ETC/rabbitmq" RABBITMQ_CONF_ENV_FILE=/dev/null RABBITMQ_PID_FILE="$RUN/rabbit.pidfile" \
  /usr/lib/rabbitmq/bin/rabbitmq-server
for i in $(seq 60); do mariadb --no-defaults -S "$RUN/mysql.sock" -e 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
for db in keystone glance placement nova_api nova nova_cell0 neutron heat; do echo "CREATE DATABASE $db CHARACTER SET utf8mb4;"; done \
  | mariadb --no-defaults -S "$RUN/mysql.sock"
mariadb --no-defaults -S "$RUN/mysql.sock" -e "CREATE USER 'os'@'%' IDENTIFIED BY 'secret'; GRANT ALL ON *.* TO 'os'@'%';"
T_INFRA=$(since "$T1"); say "mariadb up, databases created: ${T_INFRA}s"

###############################################################################################
# 3. Config files, written from scratch (oslo.config needs only the non-default options).  All services
#    authenticate to keystone as "admin" (simplest; a test cloud needs no separate service users).
###############################################################################################
authsec() { # SECTION -> keystoneauth password credentials
  cat <<EOF
[$1]
auth_url = $KS
www_authenticate_uri = $KS
auth_type = password
username = admin
password = secret
project_name = admin
user_domain_name = Default
project_domain_name = Default
# without region_name keystonemiddleware/keystoneauth look for "regionOne" endpoints and fail
region_name = RegionOne
EOF
}

cat > "$ETC/keystone/keystone.conf" <<EOF
[database]
connection = $DB/keystone
[token]
provider = fernet
[fernet_tokens]
key_repository = $ETC/keystone/fernet-keys
[fernet_receipts]
key_repository = $ETC/keystone/fernet-keys
[credential]
key_repository = $ETC/keystone/credential-keys
[identity]
# bcrypt's minimum cost: a password authentication takes ~30 ms instead of ~280 ms (cost 12) of CPU;
# tests open many connections.  Applies to every password set after this (all of them: bootstrap on).
password_hash_rounds = 4
EOF

cat > "$ETC/placement/placement.conf" <<EOF
[placement_database]
connection = $DB/placement
[api]
auth_strategy = keystone
$(authsec keystone_authtoken)
EOF

cp /usr/share/glance-common/glance-api-paste.ini "$ETC/glance/"
cat > "$ETC/glance/glance-api.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $P_GLANCE
# 0 workers = serve from the parent process (no fork): less memory
workers = 0
enabled_backends = file:file
[database]
connection = $DB/glance
[glance_store]
default_backend = file
[file]
filesystem_store_datadir = $STATE/images/
[os_glance_staging_store]
filesystem_store_datadir = $STATE/glance-staging/
[os_glance_tasks_store]
filesystem_store_datadir = $STATE/glance-tasks/
[paste_deploy]
flavor = keystone
config_file = $ETC/glance/glance-api-paste.ini
$(authsec keystone_authtoken)
EOF

# Neutron: ML2 with our own small mechanism driver "osci_fake" (below) that binds every port with no
# agent; vxlan tenant networks (no physical interface needed), a flat "public" physnet for the external
# network, the L3 "router" service plugin (routers, gateways, floating IPs work in the DB; no L3 agent).
cp /usr/share/neutron-common/api-paste.ini "$ETC/neutron/"
cat > "$ETC/neutron/neutron.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $P_NEUTRON
core_plugin = ml2
service_plugins = router
auth_strategy = keystone
transport_url = $RMQ_URL
host = $HOST_NAME
state_path = $STATE/neutron
api_paste_config = $ETC/neutron/api-paste.ini
# api_workers = 0: API served by the parent process; RPC needs at least one forked worker
api_workers = 0
rpc_workers = 1
rpc_state_report_workers = 0
# there is no DHCP agent to notify
dhcp_agent_notification = false
notify_nova_on_port_status_changes = true
notify_nova_on_port_data_changes = true
[database]
connection = $DB/neutron
[oslo_concurrency]
lock_path = $STATE/neutron/lock
[ml2]
type_drivers = flat,vlan,vxlan
tenant_network_types = vxlan
mechanism_drivers = osci_fake
extension_drivers = port_security
[ml2_type_flat]
flat_networks = public
[ml2_type_vxlan]
vni_ranges = 1000:1999
$(authsec keystone_authtoken)
$(authsec nova)
EOF

# The agent-less ML2 mechanism driver, registered through an entry point of a tiny dist-info on PYTHONPATH.
cat > "$OSCI_DIR/pylib/osci_fakemech.py" <<'EOF'
"""ML2 mechanism driver for test clouds: binds every port at once, with no L2 agent.

Ports become ACTIVE with binding:vif_type=ovs, which is all nova's fake virt driver needs.  It also plays
the L3 agent's part for floating IP status: ACTIVE while associated with a port, DOWN otherwise (as on a
real cloud, the create/update response still says DOWN; the next GET says ACTIVE)."""
from neutron_lib import constants
from neutron_lib.api.definitions import portbindings
from neutron_lib.callbacks import events, registry, resources
from neutron_lib.plugins import constants as plugin_constants
from neutron_lib.plugins import directory
from neutron_lib.plugins.ml2 import api


class FakeBindMechanismDriver(api.MechanismDriver):
    def initialize(self):
        for event in (events.AFTER_CREATE, events.AFTER_UPDATE):
            registry.subscribe(self._fip_status, resources.FLOATING_IP, event)

    @property
    def connectivity(self):
        return portbindings.CONNECTIVITY_L2

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(segment[api.ID], portbindings.VIF_TYPE_OVS,
                                {portbindings.CAP_PORT_FILTER: True},
                                status=constants.PORT_STATUS_ACTIVE)
            return

    def _fip_status(self, resource, event, trigger, payload):
        fip = payload.latest_state
        status = (constants.FLOATINGIP_STATUS_ACTIVE if fip.get("port_id")
                  else constants.FLOATINGIP_STATUS_DOWN)
        if fip.get("status") != status:
            directory.get_plugin(plugin_constants.L3).update_floatingip_status(
                payload.context.elevated(), fip["id"], status)
EOF
mkdir -p "$OSCI_DIR/pylib/osci_fakemech-1.0.dist-info"
printf 'Metadata-Version: 2.1\nName: osci-fakemech\nVersion: 1.0\n' > "$OSCI_DIR/pylib/osci_fakemech-1.0.dist-info/METADATA"
printf '[neutron.ml2.mechanism_drivers]\nosci_fake = osci_fakemech:FakeBindMechanismDriver\n' \
  > "$OSCI_DIR/pylib/osci_fakemech-1.0.dist-info/entry_points.txt"

cp /usr/share/nova-common/api-paste.ini "$ETC/nova/"
cat > "$ETC/nova/nova.conf" <<EOF
[DEFAULT]
host = $HOST_NAME
my_ip = 127.0.0.1
transport_url = $RMQ_URL
compute_driver = fake.FakeDriver
state_path = $STATE/nova
instances_path = $STATE/nova/instances
# no L2 agent will ever send network-vif-plugged: do not wait for it
vif_plugging_is_fatal = false
vif_plugging_timeout = 0
# one compute host: the provider's flavor changes (resize) must be allowed to land on the same host
allow_resize_to_same_host = true
# "stop": oslo.service waits up to 60 s by default for a graceful shutdown
graceful_shutdown_timeout = 5
[api]
auth_strategy = keystone
[api_database]
connection = $DB/nova_api
[database]
connection = $DB/nova
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 5
[oslo_concurrency]
lock_path = $STATE/nova/lock
[wsgi]
api_paste_config = $ETC/nova/api-paste.ini
[vnc]
enabled = false
[glance]
region_name = RegionOne
$(authsec keystone_authtoken)
$(authsec placement)
$(authsec neutron)
EOF

# Heat: heat-api (eventlet, [heat_api] workers = 1: one green pool in the parent, no fork) and heat-engine
# (num_engine_workers = 1: no fork).  Deferred auth by trusts (heat's default): the trustee is "admin"
# (no project in [trustee]: a trust-scoped token must not carry a project scope as well).  The stack user
# domain "heat" and its admin are created with the catalog (osci_helper.py catalog).
cp /etc/heat/api-paste.ini "$ETC/heat/"
cp -r /etc/heat/environment.d /etc/heat/templates "$ETC/heat/"
sed -i "s|file:///etc/heat/templates/|file://$ETC/heat/templates/|" "$ETC/heat/environment.d/default.yaml"
cat > "$ETC/heat/heat.conf" <<EOF
[DEFAULT]
transport_url = $RMQ_URL
num_engine_workers = 1
graceful_shutdown_timeout = 5
region_name_for_services = RegionOne
auth_encryption_key = osci-test-cloud-0123456789abcdef
environment_dir = $ETC/heat/environment.d
template_dir = $ETC/heat/templates
stack_user_domain_name = heat
stack_domain_admin = heat_domain_admin
stack_domain_admin_password = secret
# no heat-api-cfn runs; these only keep the engine from looking for a "cloudformation" endpoint
heat_metadata_server_url = http://127.0.0.1:$P_HEAT_CFN
heat_waitcondition_server_url = http://127.0.0.1:$P_HEAT_CFN/v1/waitcondition
[database]
connection = $DB/heat
[heat_api]
bind_host = 127.0.0.1
bind_port = $P_HEAT
workers = 1
[paste_deploy]
api_paste_config = $ETC/heat/api-paste.ini
[oslo_concurrency]
lock_path = $STATE/heat/lock
[clients_keystone]
auth_uri = http://127.0.0.1:$P_KS
[ec2authtoken]
auth_uri = $KS
[trustee]
auth_type = password
auth_url = $KS
username = admin
password = secret
user_domain_name = Default
$(authsec keystone_authtoken)
EOF
chmod -R go-rwx "$ETC"

###############################################################################################
# 4. Database schemas (the syncs run in parallel: on 2 cores this roughly halves the time).
###############################################################################################
T2=$(now)
(
  keystone-manage --config-file "$ETC/keystone/keystone.conf" db_sync
  keystone-manage --config-file "$ETC/keystone/keystone.conf" fernet_setup --keystone-user root --keystone-group root
  keystone-manage --config-file "$ETC/keystone/keystone.conf" credential_setup --keystone-user root --keystone-group root
  keystone-manage --config-file "$ETC/keystone/keystone.conf" bootstrap --bootstrap-password secret \
    --bootstrap-admin-url "$KS" --bootstrap-internal-url "$KS" --bootstrap-public-url "$KS" --bootstrap-region-id RegionOne
) >"$LOG/dbsync-keystone.log" 2>&1 & J1=$!
placement-manage --config-file "$ETC/placement/placement.conf" db sync >"$LOG/dbsync-placement.log" 2>&1 & J2=$!
glance-manage --config-file "$ETC/glance/glance-api.conf" db_sync >"$LOG/dbsync-glance.log" 2>&1 & J3=$!
neutron-db-manage --config-file "$ETC/neutron/neutron.conf" upgrade head >"$LOG/dbsync-neutron.log" 2>&1 & J4=$!
(
  NM="nova-manage --config-file $ETC/nova/nova.conf"
  $NM api_db sync
  $NM cell_v2 map_cell0 --database_connection "$DB/nova_cell0"
  $NM cell_v2 create_cell --name cell1
  $NM db sync
) >"$LOG/dbsync-nova.log" 2>&1 & J5=$!
heat-manage --config-file "$ETC/heat/heat.conf" db_sync >"$LOG/dbsync-heat.log" 2>&1 & J6=$!
fail=0
for j in $J1:keystone $J2:placement $J3:glance $J4:neutron $J5:nova $J6:heat; do
  wait "${j%%:*}" || { echo "db sync ${j#*:} FAILED:"; tail -20 "$LOG/dbsync-${j#*:}.log"; fail=1; }
done
[ $fail = 0 ] || exit 1
T_DBSYNC=$(since "$T2"); T_CONF=$(since "$T1"); say "db syncs: ${T_DBSYNC}s (configure incl. mariadb + db syncs: ${T_CONF}s)"

###############################################################################################
# 5. Start the services.  WSGI apps (keystone, placement, nova-api) under uwsgi; glance-api,
#    neutron-server and heat-api are eventlet servers; nova conductor/scheduler/compute and heat-engine
#    are plain processes.  uwsgi's --http-socket mishandles HTTP keep-alive (clients get
#    RemoteDisconnected on the 2nd request of a connection): force "Connection: close".
#    keystone: ONE uwsgi worker process with 4 threads (each extra worker costs ~110 MB).  nova-api
#    must NOT run threads: its eventlet-patched code deadlocks under concurrent requests in uwsgi
#    threads ("greenlet.error: cannot switch to a different thread", then every request hangs;
#    seen with Heat creating six servers at once), so it keeps two single-threaded processes.
###############################################################################################
T3=$(now)
UWSGI="uwsgi --plugins python3 --master --die-on-term --need-app --lazy-apps --enable-threads --buffer-size 65535 --add-header Connection:close"
start_bg keystone  $UWSGI --processes 1 --threads 4 --http-socket 127.0.0.1:$P_KS --wsgi-file /usr/bin/keystone-wsgi-public \
  --env OS_KEYSTONE_CONFIG_DIR="$ETC/keystone"
start_bg placement $UWSGI --processes 1 --threads 1 --http-socket 127.0.0.1:$P_PLACEMENT --wsgi-file /usr/bin/placement-api \
  --env OS_PLACEMENT_CONFIG_DIR="$ETC/placement"
start_bg nova-api  $UWSGI --processes 2 --threads 1 --http-socket 127.0.0.1:$P_NOVA --wsgi-file /usr/bin/nova-api-wsgi \
  --env OS_NOVA_CONFIG_DIR="$ETC/nova"
start_bg glance-api /usr/bin/glance-api --config-file "$ETC/glance/glance-api.conf"
start_bg neutron-server env PYTHONPATH="$OSCI_DIR/pylib" /usr/bin/neutron-server --config-file "$ETC/neutron/neutron.conf"
start_bg heat-api /usr/bin/heat-api --config-file "$ETC/heat/heat.conf"

H catalog
T_KS=$(since "$T3"); say "keystone up + catalog, demo project/user, heat roles/domain registered: ${T_KS}s after start"
# nova-conductor/-scheduler/-compute only once placement's endpoint is in the catalog: the scheduler
# exits at start-up with EndpointNotFound otherwise, and nova-compute reports its resources at start-up.
start_bg nova-conductor /usr/bin/nova-conductor --config-file "$ETC/nova/nova.conf"
start_bg nova-scheduler /usr/bin/nova-scheduler --config-file "$ETC/nova/nova.conf"
start_bg nova-compute $PY -c 'import sys; from nova.cmd.compute import main; sys.exit(main())' \
  --config-file "$ETC/nova/nova.conf"
start_bg heat-engine /usr/bin/heat-engine --config-file "$ETC/heat/heat.conf"
H wait-apis
T_API=$(since "$T3"); say "all APIs answer: ${T_API}s after start"
H wait-compute
nova-manage --config-file "$ETC/nova/nova.conf" cell_v2 discover_hosts >"$LOG/discover-hosts.log" 2>&1
H wait-hypervisor
H resources
T_READY=$(since "$T3"); say "compute host discovered; network public, flavors, images, quotas created: ${T_READY}s after start"

cat > "$OSCI_DIR/clouds.yaml" <<EOF
clouds:
  osci-admin:
    auth: {auth_url: "$KS", username: admin, password: secret, project_name: admin,
           user_domain_name: Default, project_domain_name: Default}
    region_name: RegionOne
    identity_api_version: 3
  osci-demo:
    auth: {auth_url: "$KS", username: demo, password: secret, project_name: demo,
           user_domain_name: Default, project_domain_name: Default}
    region_name: RegionOne
    identity_api_version: 3
EOF
# the final proof, the same check a later "up" or "status" makes
for s in $SERVICES; do alive "$s" || { echo "ERROR: $s died; its log: $LOG/$s.log" >&2; tail -20 "$LOG/$s.log" >&2; exit 1; }; done
H health
echo "$STAMP_WANT" > "$RUN/ready"
cat > "$OSCI_DIR/timings.env" <<EOF
T_APT=$T_APT
T_INFRA=$T_INFRA
T_DBSYNC=$T_DBSYNC
T_CONFIGURE_AND_DBSYNC=$T_CONF
T_KEYSTONE_READY=$T_KS
T_APIS_READY=$T_API
T_CLOUD_READY=$T_READY
T_TOTAL=$(since "$T0")
EOF
mem_report
say "ready in $(since "$T0")s total"
say "clouds.yaml: $OSCI_DIR/clouds.yaml   (OS_CLIENT_CONFIG_FILE=$OSCI_DIR/clouds.yaml OS_CLOUD=osci-demo or osci-admin)"
