#!/usr/bin/env bash
# The README's tour, run for real on the simulated cloud with a fresh state dir.
set -euo pipefail
cloudlet=${CLOUDLET:-cloudlet}
export CLOUDLET_STATE_DIR=${DEMO_STATE:-$(mktemp -d)}
rm -rf "$CLOUDLET_STATE_DIR"
example=examples/no-router.yaml
name=$(awk '/^  name:/ {print $2; exit}' "$example")
if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B= N=; fi
step() { printf '\n%s$ %s%s\n' "$B" "$*" "$N"; }

step cloudlet validate examples/*.yaml
$cloudlet validate examples/*.yaml

step cloudlet plan $example
$cloudlet plan "$example" || [ $? -eq 2 ]

step cloudlet sync $example --yes
$cloudlet sync "$example" --yes

step "cloudlet sync $example --yes   # again: nothing to do"
$cloudlet sync "$example" --yes

uid=$($cloudlet fake ls "$name" --json | python3 -c 'import json,sys; print(next(o["uid"] for o in json.load(sys.stdin) if o["id"] and o["id"].startswith("vm/")))')
step "cloudlet fake rm $name $uid   # drift: a VM vanishes behind our back"
$cloudlet fake rm "$name" "$uid"

step cloudlet status $name
$cloudlet status "$name"

step "cloudlet sync $example --yes   # heals the drift"
$cloudlet sync "$example" --yes

step cloudlet status $name
$cloudlet status "$name"

step cloudlet destroy $name --yes
$cloudlet destroy "$name" --yes
echo
echo "state dir used: $CLOUDLET_STATE_DIR"
