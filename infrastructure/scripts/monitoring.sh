#!/usr/bin/env bash
# Bootstrap step "monitoring" (the node that serves, after k3s): kube-prometheus-stack through
# k3s's auto-deploying manifests folder (kube-prometheus-stack.yaml, which k3s's Helm controller
# installs at its pinned version), the folder node-exporter's textfile collector reads (where
# `wms monitor drift` writes wms_drift.prom: set monitor.textfile_dir to it), and where alerts
# go: with ALERT_WEBHOOK_PARAMETER set, the webhook URL read from that SSM parameter into the
# Secret monitoring/wms-alert-webhook and alert-receiver.yaml beside the chart; without it,
# nobody is paged and the alerts are only seen on Prometheus's and Alertmanager's pages.
#
#   kubectl -n monitoring port-forward svc/kube-prometheus-stack-prometheus 9090     alerts, graphs
#   kubectl -n monitoring port-forward svc/kube-prometheus-stack-alertmanager 9093   silences
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

here=$(dirname "${BASH_SOURCE[0]}")
manifests=${K3S_MANIFESTS_DIR:-/var/lib/rancher/k3s/server/manifests}
textfile_dir=${TEXTFILE_DIR:-/var/lib/node-exporter/textfile}
kubectl=(k3s kubectl)
owner="$(id -un):$(id -gn)" # root on the node (the bootstrap runs as root)

# node-exporter (nobody) reads it; the runner's jobs, which run `wms monitor drift`, write it.
install -d -m 0755 "$(dirname "$textfile_dir")"
install -d -m 0755 -o "$RUNNER_USER" -g "$RUNNER_USER" "$textfile_dir"

sed "s/WMS_MLFLOW_PORT/$MLFLOW_PORT/" "$here/kube-prometheus-stack.yaml" |
  put_file "$manifests/wms-monitoring.yaml" 0600 "$owner" || true

for _ in $(seq 60); do
  "${kubectl[@]}" get --raw /readyz >/dev/null 2>&1 && break
  sleep 2
done

# The namespace exists before the chart is installed, so the Secret can be put there first.
"${kubectl[@]}" create namespace monitoring --dry-run=client -o yaml | "${kubectl[@]}" apply -f - >/dev/null

if [ -z "${ALERT_WEBHOOK_PARAMETER:-}" ]; then
  if [ -f "$manifests/wms-alert-receiver.yaml" ]; then
    rm -f "$manifests/wms-alert-receiver.yaml"
    "${kubectl[@]}" -n kube-system delete helmchartconfig kube-prometheus-stack --ignore-not-found >/dev/null
  fi
  "${kubectl[@]}" -n monitoring delete secret wms-alert-webhook --ignore-not-found >/dev/null
  log "no alert_webhook_parameter: alerts are only seen through a port-forward; nobody is paged"
elif url=$(aws ssm get-parameter --region "$AWS_REGION" --name "$ALERT_WEBHOOK_PARAMETER" \
  --with-decryption --query Parameter.Value --output text); then
  # From stdin, so the URL is in no command line and no file on this disk.
  "${kubectl[@]}" apply -f - >/dev/null <<SECRET
apiVersion: v1
kind: Secret
metadata:
  name: wms-alert-webhook
  namespace: monitoring
type: Opaque
data:
  url: $(printf '%s' "$url" | base64 -w0)
SECRET
  put_file "$manifests/wms-alert-receiver.yaml" 0600 "$owner" <"$here/alert-receiver.yaml" || true
  log "alerts go to the webhook in $ALERT_WEBHOOK_PARAMETER"
else
  # A receiver set up at an earlier boot keeps its URL; the first boot has none yet.
  log "cannot read the SSM parameter $ALERT_WEBHOOK_PARAMETER (alert_webhook_parameter): create it with" \
    "aws ssm put-parameter --type SecureString --name $ALERT_WEBHOOK_PARAMETER --value <webhook URL>," \
    "then sudo systemctl restart wms-bootstrap; until then alerts go to an earlier boot's URL, if any, else NOBODY IS PAGED"
fi

# The model chart's ServiceMonitor and PrometheusRule need the operator's CRDs: wait for them
# (the chart's install job fetches and installs it in a few minutes), so the first deploy finds
# them, but let the runner start even when the chart could not be fetched.
crds=(crd/servicemonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com)
for _ in $(seq 120); do
  if "${kubectl[@]}" get "${crds[@]}" >/dev/null 2>&1 &&
    "${kubectl[@]}" wait --for condition=established --timeout=60s "${crds[@]}" >/dev/null 2>&1; then
    log "kube-prometheus-stack's CRDs are in place"
    exit 0
  fi
  sleep 5
done
log "kube-prometheus-stack is not installed after ten minutes: deploys serve unwatched (NOT MONITORED)" \
  "until it is, then deploy again; see kubectl -n kube-system logs job/helm-install-kube-prometheus-stack"
