#!/usr/bin/env bash
# The bootstrap of a WMS instance: runs the steps named in BOOTSTRAP_STEPS, in order, each a
# script beside this one (base.sh, nvidia.sh, k3s.sh, ...). wms-bootstrap.service runs it at
# every boot, because cloud-init's runcmd runs once per instance; every step checks before it
# acts, so a boot with everything in place changes nothing.
#
# EC2 takes at most 16 KB of user data, so it carries only this script, lib.sh, base.sh and
# lease-guard.sh (which must stop an idle instance whatever S3 says). The other scripts and
# manifests come from the bucket (BOOT_FILES_URI, where Terraform puts each under its sha256),
# once `base` has installed the AWS CLI: /etc/wms/boot-files names each by its sha256, and a
# download that does not have it stops the bootstrap. A file already here with it is kept.
#
#   sudo systemctl restart wms-bootstrap     run it again
#   journalctl -u wms-bootstrap              what it did
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
env_file=${WMS_ENV_FILE:-/etc/wms/bootstrap.env}
boot_files=${WMS_BOOT_FILES:-/etc/wms/boot-files}

set -a
# shellcheck source=/dev/null # written by cloud-init from the Terraform variables
. "$env_file"
set +a

sha256() { sha256sum <"$1" | cut -d ' ' -f 1; }

fetch() {
  local sum name part
  while read -r sum name; do
    [ -n "$name" ] || continue
    if [ -f "$here/$name" ] && [ "$(sha256 "$here/$name")" = "$sum" ]; then
      continue
    fi
    part="$here/.$name.part"
    aws s3 cp --only-show-errors --region "$AWS_REGION" "$BOOT_FILES_URI/$sum" "$part"
    if [ "$(sha256 "$part")" != "$sum" ]; then
      echo "$BOOT_FILES_URI/$sum is not the $name this user data names: nothing of it is run"
      rm -f "$part"
      exit 1
    fi
    case $name in *.sh) chmod 755 "$part" ;; *) chmod 644 "$part" ;; esac
    mv -f "$part" "$here/$name"
    echo "fetched $name"
  done <"$boot_files"
}

fetched=""
for step in $BOOTSTRAP_STEPS; do
  if [ "$step" != base ] && [ -z "$fetched" ]; then
    echo "== the scripts and manifests, from $BOOT_FILES_URI"
    fetch
    fetched=1
  fi
  echo "== $step"
  WMS_STEP=$step bash "$here/$step.sh"
done
echo "bootstrap of the $BOOTSTRAP_ROLE node done: $BOOTSTRAP_STEPS"
