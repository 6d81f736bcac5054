#!/usr/bin/env bash
# Run by mlflow-backup.service (hourly, from mlflow-backup.timer) as the mlflow user: takes a
# consistent snapshot of the MLflow database with sqlite3's .backup (safe while the server
# writes), checks it, and copies it to MLFLOW_BACKUP_URI when it differs from the last copy
# (a registered version, a moved alias, a training's runs), so a promotion is in the bucket
# within the hour and a quiet hour copies nothing. The bucket is versioned, so each copy stays
# retrievable under the same key. A database that was backed up from here and is gone is a
# failure, not a quiet hour: exit 1, a line in the journal, and the alert WmsMlflowBackupFailed.
# Deleted under the running server, it takes every write from then on (SQLite refuses them), and
# what was registered since the last backup lives only in the deleted file the server holds
# until it restarts: the line says where, to copy it first (sqlite3 would follow the link to
# the name, which is gone; SQLite refuses writes to it, so a plain copy is whole).
#
#   sudo systemctl start mlflow-backup       back up now (when anything changed)
#
# With --record (mlflow-backup.service's ExecStopPost, as root) it only writes how the run
# ended, systemd's SERVICE_RESULT, as the gauge wms_mlflow_backup_ok in node-exporter's
# textfile folder (monitoring.sh makes it), which WmsMlflowBackupFailed watches.
set -euo pipefail

if [ "${1:-}" = --record ]; then
  dir=${TEXTFILE_DIR:-/var/lib/node-exporter/textfile}
  [ -d "$dir" ] || exit 0
  ok=0
  if [ "${SERVICE_RESULT:-}" = success ]; then ok=1; fi
  printf 'wms_mlflow_backup_ok %s\nwms_mlflow_backup_last_run_timestamp_seconds %s\n' "$ok" "$(date +%s)" \
    >"$dir/wms_mlflow_backup.prom.tmp"
  mv "$dir/wms_mlflow_backup.prom.tmp" "$dir/wms_mlflow_backup.prom"
  exit 0
fi

db=${MLFLOW_DB:-/var/lib/mlflow/mlflow.db}
# The sha256 of the last snapshot copied; the same bytes again mean nothing changed since.
state=${MLFLOW_BACKUP_STATE:-$db.backed-up}
if [ ! -s "$db" ] && [ -f "$state" ]; then
  # A process of this user (a server's worker) that still has the deleted file open.
  held=""
  for fd in /proc/[0-9]*/fd/*; do
    if [ "$(readlink "$fd" 2>/dev/null)" = "$db (deleted)" ]; then held=$fd && break; fi
  done
  lost="THE MLFLOW DATABASE IS LOST: $db, backed up from here before, is gone or empty; nothing was backed up"
  if [ -n "$held" ]; then
    echo "$lost. The server still holds the deleted file: before MLflow restarts, save it with" \
      "sudo cp $held $db.rescued (docs/recovery.md)" >&2
  else
    echo "$lost. Restore the latest backup (docs/recovery.md)" >&2
  fi
  exit 1
fi
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
sum=$(sha256sum "$tmp/mlflow.db" | cut -d ' ' -f 1)
if [ -f "$state" ] && [ "$(cat "$state")" = "$sum" ]; then
  echo "$db has not changed since its last backup to $MLFLOW_BACKUP_URI: nothing to copy"
  exit 0
fi
aws s3 cp --only-show-errors --region "$AWS_REGION" "$tmp/mlflow.db" "$MLFLOW_BACKUP_URI"
echo "$sum" >"$state"
echo "backed up $db ($(stat -c %s "$tmp/mlflow.db") bytes) to $MLFLOW_BACKUP_URI"
