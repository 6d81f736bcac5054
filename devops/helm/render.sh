#!/usr/bin/env bash
# Both charts as `wms deploy` installs them, with every toggle on, for the validators that read
# manifests: kubeconform and checkov in ci.yaml's helm job, checkov in `make checkov`.
#   devops/helm/render.sh > rendered.yaml     (HELM: the helm to run; default: helm on PATH)
# --api-versions: a cluster with the Prometheus operator's CRDs, without which each chart leaves
# its ServiceMonitor and PrometheusRule out.
set -euo pipefail
cd "$(dirname "$0")/../.."
helm=${HELM:-helm}
image=123456789012.dkr.ecr.us-east-1.amazonaws.com/wms-model
"$helm" template wms-model devops/helm/wms-model --namespace model-3 \
  --api-versions monitoring.coreos.com/v1/ServiceMonitor \
  --api-versions monitoring.coreos.com/v1/PrometheusRule \
  --values infrastructure/helm-values.yaml \
  --set image.repository="$image" --set image.tag=v3-0123abc \
  --set 'imagePullSecrets[0].name=ecr-pull-secret' \
  --set-string model.version=3 --set-string monitoring.expectedModelVersion=3 \
  --set ingress.enabled=true --set ingress.host=wms.example.com \
  --set autoscaling.enabled=true --set serviceMonitor.enabled=true \
  --set prometheusRule.enabled=true --set dashboard.enabled=true \
  --set serve.capture=uncertain
# The production address, forwarding to that version.
"$helm" template wms-model devops/helm/wms-entry --namespace wms \
  --api-versions monitoring.coreos.com/v1/ServiceMonitor \
  --api-versions monitoring.coreos.com/v1/PrometheusRule \
  --set image.repository="$image" --set image.tag=v3-0123abc \
  --set 'imagePullSecrets[0].name=ecr-pull-secret' \
  --set upstream.namespace=model-3 --set-string upstream.version=3 \
  --set serviceMonitor.enabled=true --set prometheusRule.enabled=true
