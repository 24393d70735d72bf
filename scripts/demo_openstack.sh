#!/usr/bin/env bash
# The tour on a real OpenStack: the project's test cloud (started if it is not
# up; root, ~3.5 min cold), examples/openstack.yaml synced, drift made with
# openstacksdk behind cloudlet's back, healed, then destroyed.
set -euo pipefail
cloudlet=${CLOUDLET:-cloudlet}
python=${PYTHON_BIN:-python3}
export CLOUDLET_STATE_DIR=${DEMO_STATE:-$(mktemp -d)}
rm -rf "$CLOUDLET_STATE_DIR"
example=examples/openstack.yaml
name=$(awk '/^  name:/ {print $2; exit}' "$example")
if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B= N=; fi
step() { printf '\n%s$ %s%s\n' "$B" "$*" "$N"; }

step "bash tests/integration/openstack/cloud.sh up   # the test cloud"
clouds=$(PYTHONPATH=tests/integration/openstack $python -c 'import cloudenv; print(cloudenv.ensure_cloud_up())')
export OS_CLIENT_CONFIG_FILE=$clouds
echo "OS_CLIENT_CONFIG_FILE=$clouds"

oob() { # an operator's openstacksdk call, behind cloudlet's back
  $python - "$name" "$@" <<'PY'
import sys, openstack
owner, what = sys.argv[1], sys.argv[2]
conn = openstack.connect(cloud="osci-demo")
tag = f"cloudlet.owner={owner}"
if what == "delete-server":
    server = next(s for s in conn.compute.servers(tags=tag) if s.metadata.get("cloudlet.id") == "vm/web")
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, interval=0.5)
    print(f"deleted server {server.name} ({server.id})")
elif what == "delete-rule":
    group = next(conn.network.security_groups(tags=[tag, "cloudlet.id=security-group/web"]))
    rule = next(r for r in group.security_group_rules if r["port_range_min"] == 443)
    conn.network.delete_security_group_rule(rule["id"])
    print(f"deleted rule tcp/443 of {group.name}")
elif what == "count":
    n = sum(len(list(f(tags=tag))) for f in (conn.network.networks, conn.network.subnets,
            conn.network.routers, conn.network.security_groups, conn.network.ports, conn.network.ips))
    n += len(list(conn.compute.servers(tags=tag)))
    print(f"objects tagged {tag}: {n}")
PY
}

step cloudlet plan $example
$cloudlet plan "$example" || [ $? -eq 2 ]

step cloudlet sync $example --yes
$cloudlet sync "$example" --yes

step "cloudlet plan $example   # nothing to do"
$cloudlet plan "$example"

step "openstack: delete server web and the tcp/443 rule   # drift"
oob delete-server
oob delete-rule

step cloudlet status $name
$cloudlet status "$name" || true

step "cloudlet sync $example --yes   # heals the drift"
$cloudlet sync "$example" --yes

step cloudlet status $name
$cloudlet status "$name"

step cloudlet destroy $name --yes
$cloudlet destroy "$name" --yes
oob count
echo
echo "state dir used: $CLOUDLET_STATE_DIR"
