#!/usr/bin/env bash
# Bootstrap step "k3s" (the node that serves): k3s at K3S_VERSION as a single-node cluster.
# The kubeconfig is /etc/rancher/k3s/k3s.yaml (root only); the runner's jobs get a copy in
# ~RUNNER_USER/.kube/config, which `wms deploy` reads by default, made again at each boot and by
# wms-k3s-certs.timer (k3s-certs.sh), which renews the certificates in time. The API certificate also
# names PUBLIC_IP, so the kubeconfig works from the allowed network with that address.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

changed=0
# traefik is left out: the chart's ingress is off and the service is reached through the API
# server's proxy. k3s tolerates swap, but say so rather than rely on a default.
if put_file /etc/rancher/k3s/config.yaml 0600 <<CONFIG; then changed=1; fi
# Written by the WMS bootstrap (k3s.sh); changes here are overwritten at the next boot.
write-kubeconfig-mode: "0600"
tls-san:
  - "${PUBLIC_IP}"
disable:
  - traefik
kubelet-arg:
  - "fail-swap-on=false"
CONFIG

installed=$(k3s --version 2>/dev/null | awk 'NR == 1 {print $3}' || true)
if [ "$installed" != "$K3S_VERSION" ]; then
  log "installing k3s $K3S_VERSION (found: ${installed:-none})"
  installer=$(mktemp)
  # The installer of that very release, not whatever get.k3s.io serves today.
  download "https://raw.githubusercontent.com/k3s-io/k3s/${K3S_VERSION/+/%2B}/install.sh" "$installer"
  INSTALL_K3S_VERSION=$K3S_VERSION sh "$installer"
  rm -f "$installer"
elif [ "$changed" -eq 1 ]; then
  systemctl restart k3s
fi
systemctl enable --now k3s

kubeconfig=/etc/rancher/k3s/k3s.yaml
for _ in $(seq 60); do
  [ -s "$kubeconfig" ] && break
  sleep 2
done
if [ ! -s "$kubeconfig" ]; then
  log "k3s wrote no $kubeconfig in two minutes; see journalctl -u k3s"
  exit 1
fi
home=$(getent passwd "$RUNNER_USER" | cut -d: -f6)
put_file "$home/.kube/config" 0600 "$RUNNER_USER:$RUNNER_USER" <"$kubeconfig" || true
chown "$RUNNER_USER:$RUNNER_USER" "$home/.kube"

# k3s renews its certificates (365 days) only as it starts: the daily check restarts it in
# time on a node that is never restarted, and keeps the runner's copy above current.
if put_file /etc/systemd/system/wms-k3s-certs.service 0644 <<UNIT; then systemctl daemon-reload; fi
# Written by the WMS bootstrap (k3s.sh).
[Unit]
Description=Renew the k3s certificates within 90 days of expiry (a k3s restart)
After=k3s.service

[Service]
Type=oneshot
EnvironmentFile=/etc/wms/bootstrap.env
Environment=WMS_STEP=k3s-certs
ExecStart=/usr/local/lib/wms/k3s-certs.sh
UNIT
if put_file /etc/systemd/system/wms-k3s-certs.timer 0644 <<UNIT; then systemctl daemon-reload; fi
# Written by the WMS bootstrap (k3s.sh).
[Unit]
Description=Daily check of the k3s certificates, at a quiet hour

[Timer]
OnCalendar=*-*-* 03:30:00 UTC
RandomizedDelaySec=30min

[Install]
WantedBy=timers.target
UNIT
systemctl enable --now wms-k3s-certs.timer
