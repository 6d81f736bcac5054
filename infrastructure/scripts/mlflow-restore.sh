#!/usr/bin/env bash
# Run by mlflow.service before every start (ExecStartPre, as the mlflow user): when the
# database is absent (a new disk, or one moved aside by hand) it restores the latest backup
# from MLFLOW_BACKUP_URI, checks it (PRAGMA integrity_check) and brings its schema up to this
# MLflow (`mlflow db upgrade`). Only when the bucket holds no backup at all (the first boot)
# does MLflow start with an empty database. A backup that is there but cannot be read (no
# credentials or network yet, a damaged copy) stops the start instead: an empty registry
# names no production model, and the next backup would copy it over the good one. systemd
# tries again every few seconds (Restart=always).
#
#   sudo systemctl stop mlflow
#   sudo mv /var/lib/mlflow/mlflow.db /var/lib/mlflow/mlflow.db.broken
#   sudo systemctl start mlflow        restores the latest backup, then serves it
set -euo pipefail

db=${MLFLOW_DB:-/var/lib/mlflow/mlflow.db}
mlflow=${MLFLOW_BIN:-mlflow}
if [ -s "$db" ]; then
  exit 0
fi

location=${MLFLOW_BACKUP_URI#s3://}
bucket=${location%%/*}
key=${location#*/}
refuse="MLflow is not started with an empty database; systemd tries again (journalctl -u mlflow)"

# Listing tells "no backup yet" (an empty answer) from "cannot look" (an error), which a failed
# copy does not: both exit 1.
if ! found=$(aws s3api list-objects-v2 --region "$AWS_REGION" --bucket "$bucket" --prefix "$key" \
  --query "Contents[?Key=='$key'].Key" --output text 2>&1); then
  echo "cannot tell whether $MLFLOW_BACKUP_URI holds a backup: $(echo "$found" | tail -n 1); $refuse" >&2
  exit 1
fi
if [ "$found" != "$key" ]; then
  echo "no backup at $MLFLOW_BACKUP_URI: MLflow starts with an empty database"
  exit 0
fi

restore=$db.restore
trap 'rm -f "$restore"' EXIT
if ! why=$(aws s3 cp --only-show-errors --region "$AWS_REGION" "$MLFLOW_BACKUP_URI" "$restore" 2>&1); then
  echo "the backup at $MLFLOW_BACKUP_URI cannot be copied: $(echo "$why" | tail -n 1); $refuse" >&2
  exit 1
fi
check=$(sqlite3 "$restore" "PRAGMA integrity_check;" 2>&1 || true)
if [ "$check" != "ok" ]; then
  echo "the backup at $MLFLOW_BACKUP_URI fails its integrity check ($check): put an earlier copy" \
    "in its place (docs/recovery.md); $refuse" >&2
  exit 1
fi
if ! "$mlflow" db upgrade "sqlite:///$restore"; then
  echo "mlflow db upgrade failed on the backup from $MLFLOW_BACKUP_URI; $refuse" >&2
  exit 1
fi
mv "$restore" "$db"
echo "restored $db from $MLFLOW_BACKUP_URI ($(stat -c %s "$db") bytes)"
