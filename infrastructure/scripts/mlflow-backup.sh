#!/usr/bin/env bash
# Run by mlflow-backup.service (hourly, from mlflow-backup.timer) as the mlflow user: takes a
# consistent snapshot of the MLflow database with sqlite3's .backup (safe while the server
# writes), checks it, and copies it to MLFLOW_BACKUP_URI when it differs from the last copy
# (a registered version, a moved alias, a training's runs), so a promotion is in the bucket
# within the hour and a quiet hour copies nothing. The bucket is versioned, so each copy stays
# retrievable under the same key.
#
#   sudo systemctl start mlflow-backup       back up now (when anything changed)
set -euo pipefail

db=${MLFLOW_DB:-/var/lib/mlflow/mlflow.db}
if [ ! -s "$db" ]; then
  echo "no database at $db yet: nothing to back up"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sqlite3 "$db" ".backup '$tmp/mlflow.db'"
check=$(sqlite3 "$tmp/mlflow.db" "PRAGMA integrity_check;")
if [ "$check" != "ok" ]; then
  echo "the snapshot of $db fails its integrity check: $check" >&2
  exit 1
fi
# The sha256 of the last snapshot copied; the same bytes again mean nothing changed since.
state=${MLFLOW_BACKUP_STATE:-$db.backed-up}
sum=$(sha256sum "$tmp/mlflow.db" | cut -d ' ' -f 1)
if [ -f "$state" ] && [ "$(cat "$state")" = "$sum" ]; then
  echo "$db has not changed since its last backup to $MLFLOW_BACKUP_URI: nothing to copy"
  exit 0
fi
aws s3 cp --only-show-errors --region "$AWS_REGION" "$tmp/mlflow.db" "$MLFLOW_BACKUP_URI"
echo "$sum" >"$state"
echo "backed up $db ($(stat -c %s "$tmp/mlflow.db") bytes) to $MLFLOW_BACKUP_URI"
