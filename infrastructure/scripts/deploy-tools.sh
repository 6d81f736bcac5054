#!/usr/bin/env bash
# Bootstrap step "deploy-tools" (the node that serves): what `wms deploy` calls besides the
# Kubernetes API: docker (builds and pushes the serving image; the runner's user joins the
# docker group) and helm at HELM_VERSION, checked against its published sha256.
#
# Every deploy builds an image: its build context (the sources and model.onnx) and the layers
# made from it stay in docker's build cache after `wms deploy` removes the image, and a docker
# engine whose daemon.json has no builder.gc section never prunes that cache (moby/moby#49826):
# a few tens of MB a deploy, a few hundred more at each change of the pins, for as long as the
# node lives. So the build cache's garbage collection is turned on here, at most
# DOCKER_BUILD_CACHE (default 2GB; the pinned dependencies' layer, about 280 MB, stays cached),
# merged into daemon.json beside what is there (the NVIDIA runtime in single).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! command -v docker >/dev/null; then
  apt_install docker.io
fi
daemon_json=${DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}
keep=${DOCKER_BUILD_CACHE:-2GB}
current=$(cat "$daemon_json" 2>/dev/null || true)
if ! settings=$(jq --arg keep "$keep" '.builder.gc = (.builder.gc // {}) + {enabled: true, defaultKeepStorage: $keep}' \
  <<<"${current:-"{}"}" 2>&1); then
  log "$daemon_json is not JSON ($settings): mend it, then sudo systemctl restart wms-bootstrap"
  exit 1
fi
docker_changed=0
if put_file "$daemon_json" 0644 <<<"$settings"; then docker_changed=1; fi
systemctl enable --now docker
if [ "$docker_changed" -eq 1 ]; then
  systemctl restart docker
  log "docker's build cache is kept under $keep"
fi
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
