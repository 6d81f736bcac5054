#!/usr/bin/env bash
# Bootstrap step "deploy-tools" (the node that serves): what `wms deploy` calls besides the
# Kubernetes API: docker (builds and pushes the serving image; the runner's user joins the
# docker group) and helm at HELM_VERSION, checked against its published sha256.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! command -v docker >/dev/null; then
  apt_install docker.io
fi
systemctl enable --now docker
if ! id -nG "$RUNNER_USER" | grep -qw docker; then
  usermod -aG docker "$RUNNER_USER"
  log "$RUNNER_USER may use docker"
fi

installed=$(helm version --template '{{.Version}}' 2>/dev/null || true)
if [ "$installed" != "$HELM_VERSION" ]; then
  log "installing helm $HELM_VERSION (found: ${installed:-none})"
  arch=$(dpkg --print-architecture)
  tarball="helm-${HELM_VERSION}-linux-${arch}.tar.gz"
  tmp=$(mktemp -d)
  download "https://get.helm.sh/$tarball" "$tmp/$tarball"
  download "https://get.helm.sh/$tarball.sha256sum" "$tmp/$tarball.sha256sum"
  (cd "$tmp" && sha256sum --check --quiet "$tarball.sha256sum")
  tar -xzf "$tmp/$tarball" -C "$tmp"
  install -m 0755 "$tmp/linux-${arch}/helm" /usr/local/bin/helm
  rm -rf "$tmp"
fi
