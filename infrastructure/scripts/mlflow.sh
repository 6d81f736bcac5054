#!/usr/bin/env bash
# Bootstrap step "mlflow" (the node that serves): the MLflow tracking server at MLFLOW_VERSION
# in its own virtual environment, as mlflow.service on MLFLOW_PORT. The backend store is
# SQLite on this disk (/var/lib/mlflow/mlflow.db); artifacts go through the server to
# MLFLOW_ARTIFACTS_URI in S3, so clients need no S3 access of their own. mlflow-backup.timer
# copies a consistent snapshot of the database to MLFLOW_BACKUP_URI within the hour after it
# changed; whenever the server starts without a database (a new disk, one moved aside),
# mlflow-restore.sh restores the latest backup first, and refuses to start empty while a
# backup it cannot read is there.
# Another MLFLOW_VERSION gets `mlflow db upgrade` before the server starts (a copy kept beside).
# Its /metrics (--expose-prometheus) tells the node's Prometheus that it is up.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

venv=/opt/mlflow/venv
data=/var/lib/mlflow
db=$data/mlflow.db
changed=0
migrate=0  # another MLflow: bring the schema up to this MLflow

# pip keeps no cache (root's): each MLflow upgrade would leave its wheels there for good.
have=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("mlflow"))' 2>/dev/null || true)
if [ "$have" != "$MLFLOW_VERSION" ]; then
  log "installing mlflow $MLFLOW_VERSION (found: ${have:-none})"
  systemctl stop mlflow.service 2>/dev/null || true
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir "mlflow==$MLFLOW_VERSION" boto3
  changed=1
  migrate=1
fi
if ! "$venv/bin/python" -c 'import prometheus_flask_exporter' 2>/dev/null; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir prometheus-flask-exporter==0.23.2
  changed=1
fi

if ! id -u mlflow >/dev/null 2>&1; then
  useradd --system --home-dir "$data" --shell /usr/sbin/nologin mlflow
fi
install -d -o mlflow -g mlflow -m 0750 "$data"

if [ "$migrate" -eq 1 ] && [ -s "$db" ]; then
  systemctl stop mlflow.service 2>/dev/null || true
  sqlite3 "$db" ".backup '$db.before-$MLFLOW_VERSION'"
  log "upgrading the database schema for mlflow $MLFLOW_VERSION (copy kept: $db.before-$MLFLOW_VERSION)"
  runuser -u mlflow -- "$venv/bin/mlflow" db upgrade "sqlite:///$db"
  changed=1
fi

# Host headers MLflow answers: its defaults (loopback, private addresses) plus the public
# address and its DNS name, ec2-A-B-C-D.<region's domain>.amazonaws.com, which the runners' jobs
# use (Terraform's mlflow_url_internal: it follows the Elastic IP to a replaced node).
allowed_hosts="localhost,localhost:*,127.0.0.1,127.0.0.1:*,10.*,172.*,192.168.*"
if [ -n "${PUBLIC_IP:-}" ]; then
  name="ec2-${PUBLIC_IP//./-}.*.amazonaws.com"
  allowed_hosts="$allowed_hosts,$PUBLIC_IP,$PUBLIC_IP:*,$name,$name:*"
fi

if put_file /etc/systemd/system/mlflow.service 0644 <<UNIT; then changed=1; fi
# Written by the WMS bootstrap (mlflow.sh).
[Unit]
Description=MLflow tracking server (SQLite backend, artifacts in S3)
Wants=network-online.target
After=network-online.target

[Service]
User=mlflow
WorkingDirectory=$data
Environment=AWS_REGION=$AWS_REGION AWS_DEFAULT_REGION=$AWS_REGION
Environment=MLFLOW_DB=$db MLFLOW_BIN=$venv/bin/mlflow MLFLOW_BACKUP_URI=$MLFLOW_BACKUP_URI
ExecStartPre=/usr/local/lib/wms/mlflow-restore.sh
# Room for the restore: a download and a schema upgrade that can take minutes on a big database.
TimeoutStartSec=15min
# /metrics's files, emptied at each start.
RuntimeDirectory=mlflow
ExecStart=$venv/bin/mlflow server --backend-store-uri sqlite:///$db --artifacts-destination $MLFLOW_ARTIFACTS_URI --host 0.0.0.0 --port $MLFLOW_PORT --workers 2 --allowed-hosts $allowed_hosts --expose-prometheus /run/mlflow/metrics
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT

if put_file /etc/systemd/system/mlflow-backup.service 0644 <<UNIT; then changed=1; fi
# Written by the WMS bootstrap (mlflow.sh).
[Unit]
Description=Copy a snapshot of the MLflow database to S3
After=network-online.target

[Service]
Type=oneshot
User=mlflow
EnvironmentFile=/etc/wms/bootstrap.env
ExecStart=/usr/local/lib/wms/mlflow-backup.sh
# As root ("+"): how the run ended, for node-exporter and the alert WmsMlflowBackupFailed.
ExecStopPost=+/usr/local/lib/wms/mlflow-backup.sh --record
UNIT

if put_file /etc/systemd/system/mlflow-backup.timer 0644 <<UNIT; then changed=1; fi
# Written by the WMS bootstrap (mlflow.sh).
[Unit]
Description=Hourly backup of the MLflow database to S3 (when it changed)

[Timer]
OnCalendar=hourly
RandomizedDelaySec=5min
# A node that was stopped at the time catches up at its next boot.
Persistent=true

[Install]
WantedBy=timers.target
UNIT

systemctl daemon-reload
systemctl enable mlflow.service mlflow-backup.timer
# A start whose restore failed (no credentials yet at a first boot) is retried by systemd
# (Restart=always); the loop below waits for it.
if [ "$changed" -eq 1 ]; then
  systemctl restart mlflow.service || true
else
  systemctl start mlflow.service || true
fi
systemctl start mlflow-backup.timer

for _ in $(seq 60); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$MLFLOW_PORT/health"; then
    log "MLflow $MLFLOW_VERSION answers on port $MLFLOW_PORT"
    exit 0
  fi
  sleep 2
done
log "MLflow does not answer on port $MLFLOW_PORT after two minutes; see journalctl -u mlflow"
exit 1
