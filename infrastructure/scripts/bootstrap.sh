#!/usr/bin/env bash
# The bootstrap of a WMS instance: runs the steps named in BOOTSTRAP_STEPS, in order, each a
# script beside this one (base.sh, nvidia.sh, k3s.sh, ...). wms-bootstrap.service runs it at
# every boot, because cloud-init's runcmd runs once per instance; every step checks before it
# acts, so a boot with everything in place changes nothing.
#
#   sudo systemctl restart wms-bootstrap     run it again
#   journalctl -u wms-bootstrap              what it did
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
env_file=${WMS_ENV_FILE:-/etc/wms/bootstrap.env}

set -a
# shellcheck source=/dev/null # written by cloud-init from the Terraform variables
. "$env_file"
set +a

for step in $BOOTSTRAP_STEPS; do
  echo "== $step"
  WMS_STEP=$step bash "$here/$step.sh"
done
echo "bootstrap of the $BOOTSTRAP_ROLE node done: $BOOTSTRAP_STEPS"
