#!/usr/bin/env bash
# Bootstrap step "base": the packages every WMS node needs (APT_PACKAGES, plus APT_OPTIONAL
# where the archive has them), the AWS CLI v2 when no `aws` is installed (its signed snap), the unprivileged
# user the GitHub runner runs as (RUNNER_USER), a swap file of SWAP_GB GiB when set, and the
# instance's region (AWS_REGION) in /etc/environment (ENVIRONMENT_FILE) for every session.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

read -r -a packages <<<"$APT_PACKAGES"
apt_install "${packages[@]}"
for package in ${APT_OPTIONAL:-}; do
  if apt_available "$package"; then
    apt_install "$package"
  else
    log "$package is not in this image's archives; skipped"
  fi
done

# The AWS CLI v2 from its snap, which AWS publishes and snapd installs only with the store's
# signature checked (Ubuntu images have snapd; the GPU AMI has `aws` already). The zip from
# awscli.amazonaws.com carries no checksum to pin, only a signature by a key that expires.
# Services and cloud-init run without /snap/bin on their PATH, hence the command in AWS_COMMAND.
aws_command=${AWS_COMMAND:-/usr/local/bin/aws}
if ! command -v aws >/dev/null; then
  if ! command -v snap >/dev/null; then
    log "no aws and no snap to install it from: use an image with either (serving_ami_id; Ubuntu's has snap)"
    exit 1
  fi
  log "installing the AWS CLI v2 (the aws-cli snap, signed by AWS)"
  # A first boot may still be seeding snapd's own snaps; an install before that is refused.
  snap wait system seed.loaded
  snap install aws-cli --classic
  printf '#!/bin/sh\nexec /snap/bin/aws "$@"\n' | put_file "$aws_command" 755 || true
fi

if ! id -u "$RUNNER_USER" >/dev/null 2>&1; then
  log "creating the user $RUNNER_USER"
  useradd --create-home --shell /bin/bash "$RUNNER_USER"
fi

# SSH sessions (wms compute ssh and exec, a training started over SSH) take /etc/environment
# through PAM, and nothing else: without the region there, boto3 and the AWS CLI refuse every
# EC2 and SSM call ("You must specify a region"). boto3 reads AWS_DEFAULT_REGION, never AWS_REGION.
environment=${ENVIRONMENT_FILE:-/etc/environment}
touch "$environment"
sed -i '/^AWS_\(DEFAULT_\)\{0,1\}REGION=/d' "$environment"
printf 'AWS_REGION=%s\nAWS_DEFAULT_REGION=%s\n' "$AWS_REGION" "$AWS_REGION" >>"$environment"

swap_gb=${SWAP_GB:-0}
if [ "$swap_gb" -gt 0 ]; then
  if [ ! -f /swapfile ]; then
    log "creating a ${swap_gb} GiB swap file"
    fallocate -l "${swap_gb}G" /swapfile
    chmod 600 /swapfile
    mkswap /swapfile >/dev/null
  fi
  grep -q '^/swapfile ' /etc/fstab || echo '/swapfile none swap sw 0 0' >>/etc/fstab
  swapon --show=NAME --noheadings | grep -qx /swapfile || swapon /swapfile
fi
