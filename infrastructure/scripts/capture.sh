#!/usr/bin/env bash
# Bootstrap step "capture" (the node that serves, before k3s). With CAPTURE_INBOX set
# (Terraform's capture_inbox = true), the model's pods keep photos for labelling in this node's
# spool, /var/lib/wms/captures (the chart mounts it into each pod at /captures): a
# memory-backed folder of at most 64 MB that only the pods' user may write. Every minute
# wms-capture-upload.timer sends the complete captures on to the S3 inbox with the node's role
# (capture-upload.sh), so the pods need no AWS credentials and the instance metadata service
# does not answer them (hop limit 1); wms-capture-flush sends them once more as the node stops,
# as the spool is memory. The spool is mounted before k3s starts (local-fs.target), so a pod
# never writes to the disk under it. Without CAPTURE_INBOX the units and the spool are taken
# away.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

units=${SYSTEMD_DIR:-/etc/systemd/system}
textfile_dir=${TEXTFILE_DIR:-/var/lib/node-exporter/textfile} # capture-upload.sh's gauge
spool=/var/lib/wms/captures
mount_unit=var-lib-wms-captures.mount # systemd-escape --path --suffix=mount "$spool"
pod_user=10001                        # runAsUser of the chart's pods (devops/helm/wms-model)

if [ -z "${CAPTURE_INBOX:-}" ]; then
  removed=0
  for unit in wms-capture-upload.timer wms-capture-upload.service wms-capture-flush.service "$mount_unit"; do
    if [ -f "$units/$unit" ]; then
      systemctl disable --now "$unit" || true
      rm -f "$units/$unit"
      removed=1
    fi
  done
  if [ "$removed" -eq 1 ]; then
    rm -f "$textfile_dir/wms_capture_upload.prom" # or WmsCaptureUploadFailing would find it stale
    systemctl daemon-reload
    log "capture_inbox is off: the spool and its upload are gone (photos not yet sent went with them)"
  fi
  exit 0
fi

put_file "$units/$mount_unit" 0644 <<UNIT || true
# Written by the WMS bootstrap (capture.sh).
[Unit]
Description=The model pods' spool of photos kept for labelling (in memory, at most 64 MB)

[Mount]
What=tmpfs
Where=$spool
Type=tmpfs
Options=size=64m,mode=0770,uid=$pod_user,gid=$pod_user,nosuid,nodev,noexec

[Install]
WantedBy=local-fs.target
UNIT

put_file "$units/wms-capture-upload.service" 0644 <<UNIT || true
# Written by the WMS bootstrap (capture.sh).
[Unit]
Description=Send the photos the model's pods kept for labelling to the S3 inbox
After=network-online.target $mount_unit
Requires=$mount_unit

[Service]
Type=oneshot
EnvironmentFile=/etc/wms/bootstrap.env
ExecStart=/usr/local/lib/wms/capture-upload.sh
UNIT

put_file "$units/wms-capture-upload.timer" 0644 <<UNIT || true
# Written by the WMS bootstrap (capture.sh).
[Unit]
Description=Send the pods' captures to the S3 inbox every minute

[Timer]
OnBootSec=1min
OnUnitActiveSec=1min

[Install]
WantedBy=timers.target
UNIT

# The spool is memory: what waits there when the node stops goes with it, unless sent first.
# Stopped after k3s (Before=) and before the network and the spool go (After=).
put_file "$units/wms-capture-flush.service" 0644 <<UNIT || true
# Written by the WMS bootstrap (capture.sh).
[Unit]
Description=Send what waits in the pods' spool to the S3 inbox before this node stops
Wants=network-online.target
After=network-online.target $mount_unit
Requires=$mount_unit
Before=k3s.service

[Service]
Type=oneshot
RemainAfterExit=yes
EnvironmentFile=/etc/wms/bootstrap.env
ExecStart=/bin/true
ExecStop=/usr/local/lib/wms/capture-upload.sh
TimeoutStopSec=90

[Install]
WantedBy=multi-user.target
UNIT

systemctl daemon-reload
systemctl enable --now "$mount_unit" wms-capture-upload.timer wms-capture-flush.service
log "photos the pods keep go through $spool to $CAPTURE_INBOX, every minute"
