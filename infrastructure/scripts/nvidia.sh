#!/usr/bin/env bash
# Bootstrap step "nvidia" (GPU instance): the NVIDIA driver and container toolkit, installed
# only where the AMI lacks them. The Deep Learning Base AMI has both, so there this step only
# checks `nvidia-smi` and `nvidia-ctk`. A freshly installed driver that does not load is given
# one reboot (the bootstrap runs again after it).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

marker=/var/lib/wms/nvidia-rebooted
# The key that signs NVIDIA's container toolkit packages, as NVIDIA documents it: a key served
# in its place is refused before apt is told to trust it.
nvidia_key=C95B321B61E88C1809C4F759DDCAE044F796ECB0

if nvidia-smi -L >/dev/null 2>&1; then
  log "driver present: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n 1)"
else
  log "no working NVIDIA driver: installing the recommended server driver"
  apt_install ubuntu-drivers-common
  ubuntu-drivers install --gpgpu
  if ! modprobe nvidia || ! nvidia-smi -L >/dev/null 2>&1; then
    if [ -f "$marker" ]; then
      log "the NVIDIA driver does not load even after a reboot; see dmesg"
      exit 1
    fi
    install -d /var/lib/wms
    touch "$marker"
    log "rebooting once to load the new driver"
    systemctl reboot
    exit 0
  fi
fi

if ! command -v nvidia-ctk >/dev/null; then
  log "installing the NVIDIA container toolkit"
  keyring=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
  tmp=$(mktemp -d)
  download https://nvidia.github.io/libnvidia-container/gpgkey "$tmp/gpgkey"
  served=$(key_fingerprints "$tmp/gpgkey" | paste -sd ' ' -)
  if [ "$served" != "$nvidia_key" ]; then
    log "NVIDIA's package key has fingerprint(s) ${served:-none}, expected $nvidia_key: the container toolkit is not installed"
    rm -rf "$tmp"
    exit 1
  fi
  gpg --batch --yes --dearmor -o "$keyring" "$tmp/gpgkey"
  download https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list "$tmp/list"
  sed "s#deb https://#deb [signed-by=$keyring] https://#g" "$tmp/list" \
    >/etc/apt/sources.list.d/nvidia-container-toolkit.list
  rm -rf "$tmp"
  apt_install nvidia-container-toolkit
  if command -v docker >/dev/null; then
    nvidia-ctk runtime configure --runtime=docker
    systemctl restart docker
  fi
fi
