#!/usr/bin/env bash
# Run daily by wms-k3s-certs.timer (k3s.sh writes it) as root: keeps the cluster's certificates
# from expiring on a node that is never restarted. k3s issues its leaf certificates (API server,
# kubelet, the admin client certificate of /etc/rancher/k3s/k3s.yaml) for 365 days and renews
# them only as it starts, those within 90 days of expiry (docs.k3s.io, "Certificate
# Management"); an always-on node left alone for a year has them expire, and then every deploy,
# the hourly heal and kubectl fail. So when one is within RENEW_DAYS (90, k3s's own window) this
# restarts k3s, at the timer's quiet hour and once no deploy runs (one running then would
# fail): the pods keep running through it (k3s stops no container when its service stops),
# the API is away for a minute or so. Then it copies the rewritten kubeconfig to the runner's
# jobs (~RUNNER_USER/.kube/config), whose client certificate expires with the old one, and
# writes the earliest expiry of all of them as the gauge
# wms_k3s_certificate_expiry_timestamp_seconds in node-exporter's textfile folder, which
# WmsK3sCertificatesExpiring watches.
#
#   sudo systemctl start wms-k3s-certs       check (and renew) now
#   journalctl -u wms-k3s-certs              what it did
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

data=${K3S_DATA_DIR:-/var/lib/rancher/k3s}
kubeconfig=${K3S_KUBECONFIG:-/etc/rancher/k3s/k3s.yaml}
textfile_dir=${TEXTFILE_DIR:-/var/lib/node-exporter/textfile}
window=$((${RENEW_DAYS:-90} * 86400))
home=$(getent passwd "$RUNNER_USER" | cut -d: -f6)
copy=$home/.kube/config

# The leaf certificates k3s renews (a file's first certificate; the CAs, 10 years, it never does).
leaves() {
  local file
  for file in "$data"/server/tls/*.crt "$data"/server/tls/etcd/*.crt "$data"/agent/*.crt; do
    case "$file" in *-ca.crt) continue ;; esac
    [ -f "$file" ] && cat "$file"
  done
}

# The client certificate of the runner's copy of the kubeconfig.
copied() {
  [ -f "$copy" ] || return 0
  awk '$1 == "client-certificate-data:" {print $2; exit}' "$copy" | base64 -d
}

# earliest: the first notAfter (seconds since the epoch) among the certificates on stdin.
earliest() {
  local pem="" line first="" end
  while IFS= read -r line; do
    pem+=$line$'\n'
    if [ "$line" = "-----END CERTIFICATE-----" ]; then
      end=$(date -d "$(openssl x509 -noout -enddate <<<"$pem" | cut -d= -f2)" +%s)
      if [ -z "$first" ] || [ "$end" -lt "$first" ]; then first=$end; fi
      pem=""
    fi
  done
  echo "$first"
}

# A deploy runs here: the runner's `wms deploy`, or a helm by hand.
busy() { pgrep -f 'wms deploy( -|$)|helm (upgrade|install|rollback|uninstall) ' >/dev/null; }

refresh_copy() {
  if put_file "$copy" 0600 "$RUNNER_USER:$RUNNER_USER" <"$kubeconfig"; then
    log "the runner's jobs have k3s's current kubeconfig"
  fi
}

cluster=$(leaves | earliest)
if [ -z "$cluster" ]; then
  log "no k3s certificate under $data: is k3s installed?"
  exit 1
fi
status=0
if [ "$cluster" -lt $(($(date +%s) + window)) ]; then
  # A deploy (`wms deploy`, helm) fails when the API goes away under it: wait for it to end,
  # at most DEPLOY_WAIT_MINUTES (45), else leave the restart to tomorrow's check.
  busy && log "a deploy runs here: the k3s restart waits for it to end"
  for _ in $(seq $((${DEPLOY_WAIT_MINUTES:-45} * 2))); do busy || break; sleep 30; done
  if busy; then
    log "a k3s certificate expires on $(date -u -d "@$cluster" +%F), but a deploy still runs:" \
      "k3s is restarted at tomorrow's check"
  else
    log "a k3s certificate expires on $(date -u -d "@$cluster" +%F): restarting k3s to renew it"
    systemctl restart k3s || true # the check below says whether it renewed
    for _ in $(seq 60); do
      k3s kubectl get --raw /readyz >/dev/null 2>&1 && break
      sleep 2
    done
    cluster=$(leaves | earliest)
    if [ "$cluster" -lt $(($(date +%s) + window)) ]; then
      log "K3S DID NOT RENEW ITS CERTIFICATES (one expires on $(date -u -d "@$cluster" +%F));" \
        "see journalctl -u k3s, or renew by hand: sudo systemctl stop k3s && sudo k3s certificate rotate" \
        "&& sudo systemctl start k3s, then sudo systemctl start wms-k3s-certs"
      status=1
    else
      log "k3s renewed its certificates: they now expire on $(date -u -d "@$cluster" +%F);" \
        "fetch your own copy of the kubeconfig again (docs/aws.md, step 6)"
    fi
  fi
fi
refresh_copy
soonest=$cluster
client=$(copied | earliest)
if [ -n "$client" ] && [ "$client" -lt "$soonest" ]; then soonest=$client; fi

if [ -d "$textfile_dir" ]; then
  printf 'wms_k3s_certificate_expiry_timestamp_seconds %s\n' "$soonest" >"$textfile_dir/wms_k3s_certs.prom.tmp"
  mv "$textfile_dir/wms_k3s_certs.prom.tmp" "$textfile_dir/wms_k3s_certs.prom"
fi
exit "$status"
