#!/usr/bin/env bash
# Run every minute by wms-capture-upload.service (wms-capture-upload.timer; capture.sh installs
# both when Terraform's capture_inbox is on), as root: sends the photos that the model's pods
# kept for labelling from this node's spool on to the S3 inbox, with the node's role, so that
# no pod holds AWS credentials or reaches the instance metadata service.
#  1. A capture is complete once its meta/<id>.json is there (the pod writes it last). Its three
#     files move out of the pods' reach, to the sending folder (root's, on this disk), but only
#     when that folder is empty: while S3 refuses them, captures wait in the spool, where the
#     pods count them against their caps, and the spool's size bounds them. A photo the inbox
#     holds already (a pod restarted forgets what it kept) is dropped: sent again, it would
#     restart the time S3 keeps it (capture_keep_days), which the users were told.
#  2. The sending folder goes to CAPTURE_INBOX: photos and masks first, metadata last, so the
#     inbox never shows a capture without its photo. Symbolic links are not followed (a pod
#     may write anything into the spool). What fails stays for the next round.
#  3. <spool>/upstream.json: the photos and bytes the inbox holds, which the pods' caps count
#     (wms.serve.capture), so that serve.capture_max_files still bounds the S3 inbox.
# Files of the spool that are not part of a complete capture after 10 minutes (a pod stopped
# while it wrote, or names a pod does not write) are deleted. Each round's outcome is the gauge
# wms_capture_upload_ok in node-exporter's textfile folder (the alert WmsCaptureUploadFailing).
#
#   sudo systemctl start wms-capture-upload     send now
#   journalctl -u wms-capture-upload            what it sent, and why it could not
set -euo pipefail

spool=${CAPTURE_SPOOL:-/var/lib/wms/captures}
sending=${CAPTURE_SENDING:-/var/lib/wms/captures-sending}
in_inbox=$sending.ids # the ids of the captures the inbox held at the last round
textfile_dir=${TEXTFILE_DIR:-/var/lib/node-exporter/textfile}
inbox=${CAPTURE_INBOX%/}
aws=(aws --region "$AWS_REGION")
kinds=(images masks meta)

record() {
  local ok=$1 tmp
  [ -d "$textfile_dir" ] || return 0
  tmp=$(mktemp "$textfile_dir/.wms_capture_upload.XXXXXX")
  printf 'wms_capture_upload_ok %s\nwms_capture_upload_last_run_timestamp_seconds %s\n' "$ok" "$(date +%s)" >"$tmp"
  chmod 644 "$tmp"
  mv -fT "$tmp" "$textfile_dir/wms_capture_upload.prom"
}
on_exit() {
  local status=$?
  record "$((status == 0))"
  exit "$status"
}
trap on_exit EXIT

for kind in "${kinds[@]}"; do
  install -d -m 700 "$sending/$kind"
  if [ -L "$spool/$kind" ]; then rm -f "$spool/$kind"; fi # the pods write folders, not links
done
# A link or a folder cannot be sent (and a failed round may have left nothing else behind).
find "$sending" -mindepth 2 ! -type f -prune -exec rm -rf {} +

# 1. Complete captures into the sending folder, when it is empty.
if [ -z "$(find "$sending" -mindepth 2 -print -quit)" ]; then
  for meta in "$spool"/meta/*.json; do
    id=$(basename "$meta" .json)
    photo=$spool/images/$id.jpg mask=$spool/masks/$id.png
    if ! [[ $id =~ ^[0-9a-f]{16}$ ]] || [ ! -f "$meta" ] || [ -L "$meta" ] ||
      [ ! -f "$photo" ] || [ -L "$photo" ] || [ ! -f "$mask" ] || [ -L "$mask" ]; then
      continue
    fi
    if [ -f "$in_inbox" ] && grep -qxF "$id" "$in_inbox"; then
      echo "dropped $id: the inbox holds that photo already"
      rm -f "$photo" "$mask" "$meta"
    else
      mv -f "$photo" "$sending/images/" && mv -f "$mask" "$sending/masks/" && mv -f "$meta" "$sending/meta/"
    fi
  done
fi
find "${kinds[@]/#/$spool/}" -mindepth 1 -maxdepth 1 -mmin +10 -exec rm -rf {} + 2>/dev/null || true

# 2. Send them, the metadata last.
count=$(find "$sending/meta" -type f | wc -l)
for kind in "${kinds[@]}"; do
  if [ -n "$(find "$sending/$kind" -type f -print -quit)" ]; then
    "${aws[@]}" s3 mv "$sending/$kind/" "$inbox/$kind/" --recursive --no-follow-symlinks --only-show-errors
  fi
done
if [ "$count" -gt 0 ]; then
  echo "sent $count photo(s) to $inbox"
fi

# 3. What the inbox holds, for the pods' caps. `aws s3 ls` fails, saying nothing, on an empty prefix.
errors=$(mktemp)
listing=$("${aws[@]}" s3 ls "$inbox/" --recursive 2>"$errors") || {
  if [ -s "$errors" ]; then
    cat "$errors" >&2
    rm -f "$errors"
    echo "could not list $inbox: the pods' caps count the last report" >&2
    exit 1
  fi
}
rm -f "$errors"
# "DATE TIME SIZE KEY": what the pods count, their three folders less files still being written;
# and the ids the inbox holds, for step 1 of the next round.
read -r photos size < <(printf '%s\n' "$listing" | awk -v ids="$in_inbox.new" '
  { key = $0; sub(/^[^ ]+ +[^ ]+ +[0-9]+ /, "", key) }
  key ~ /\/(images|masks|meta)\/[^\/]+$/ && key !~ /\.tmp$/ { bytes += $3 }
  key ~ /\/meta\/[^\/]+\.json$/ { n++; id = key; sub(/^.*\//, "", id); sub(/\.json$/, "", id); print id > ids }
  END { printf "%d %d\n", n, bytes; printf "" >> ids }')
mv -f "$in_inbox.new" "$in_inbox"
report=$(mktemp "$spool/.upstream.XXXXXX")
printf '{"inbox": "%s", "photos": %d, "bytes": %d, "measured_at": "%s"}\n' \
  "$inbox" "$photos" "$size" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$report"
chmod 644 "$report"
mv -fT "$report" "$spool/upstream.json"
