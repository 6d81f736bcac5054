#!/usr/bin/env bash
# Run by wms-lease-guard.service every 5 minutes (wms-lease-guard.timer, first 20 minutes after
# boot) on the GPU instance: powers it off (its shutdown behaviour is "stop") once no lease
# holds it. The leases are the tags `wms compute` writes (wms.compute.leases):
# wms:lease:<holder> = <ISO expiry>, or the summary wms:lease-expires on an instance an older
# WMS tagged. `wms compute reap` (compute-reaper.yaml) normally stops such an instance first;
# this stop does not depend on GitHub Actions running (a private repository's included
# minutes used up, an outage, a failing workflow). An instance with no readable lease (one
# started in the EC2 console, or by the first `terraform apply`) goes at the first look once
# its bootstrap is done. When EC2 cannot be asked, nothing happens: a run may hold it.
#
# Before powering off it tags itself wms:stopping and reads its leases again, as `wms compute
# stop` and the reaper do: a `wms compute start` that leased it just before the mark keeps it
# running, and one just after sees the mark, waits for the stop and starts it again, instead
# of reporting a machine that is shutting down as ready.
#
# Environment (set by the unit): AWS_REGION; LEASE_GUARD_GRACE_MINUTES, how long after the
# last lease ran out the reaper is given first (default 20).
set -euo pipefail

grace=$((${LEASE_GUARD_GRACE_MINUTES:-20} * 60))
# A bootstrap cut off inside apt or a driver install would leave the next boot to mend it.
if [ "$(systemctl show -p ActiveState --value wms-bootstrap.service)" = activating ]; then
  echo "the bootstrap still runs: looking again at the next round"
  exit 0
fi
imds=http://169.254.169.254/latest
imds_token=$(curl -sSf --connect-timeout 5 -X PUT "$imds/api/token" \
  -H "X-aws-ec2-metadata-token-ttl-seconds: 60")
id=$(curl -sSf --connect-timeout 5 -H "X-aws-ec2-metadata-token: $imds_token" "$imds/meta-data/instance-id")

# Sets `latest` to the latest lease expiry in epoch seconds (0: no readable lease), read from
# the instance's tags as wms.compute.leases.leases_of reads them: the holder tags; the summary
# only where no holder tag is and no wms:lease-holders says that the holder tags alone are leases.
read_leases() {
  local tags value at
  local -a expiries
  if ! tags=$(aws ec2 describe-tags --region "$AWS_REGION" --filters "Name=resource-id,Values=$id" \
    --query Tags --output json); then
    echo "cannot read the tags of $id; leaving it running" >&2
    return 1
  fi
  mapfile -t expiries < <(jq -r '
    [.[] | select(.Key | startswith("wms:lease:")) | .Value] as $holders
    | if ($holders | length) > 0 then $holders[]
      elif any(.[]; .Key == "wms:lease-holders") then empty
      else (.[] | select(.Key == "wms:lease-expires") | .Value) end' <<<"$tags")
  latest=0
  for value in "${expiries[@]}"; do
    if at=$(date -d "$value" +%s 2>/dev/null) && [ "$at" -gt "$latest" ]; then
      latest=$at
    fi
  done
}

# Whether the instance may run on: a lease, or the reaper's grace after the last one.
leased() {
  [ "$latest" -ne 0 ] && [ "$(date +%s)" -lt $((latest + grace)) ]
}

read_leases || exit 1
if leased; then
  echo "instance $id is leased until $(date -u -d "@$latest" +%FT%TZ): left running"
  exit 0
elif [ "$latest" -eq 0 ]; then
  echo "instance $id runs with no lease (started outside wms compute?): stopping it"
else
  echo "every lease of instance $id ran out at $(date -u -d "@$latest" +%FT%TZ) and the reaper" \
    "has not stopped it: stopping it"
fi

# The mark `wms compute start` waits on (wms:stopping = <who> <ISO time>), then a second look.
if aws ec2 create-tags --region "$AWS_REGION" --resources "$id" \
  --tags "Key=wms:stopping,Value=lease-guard $(date -u +%Y-%m-%dT%H:%M:%S+00:00)"; then
  if ! read_leases; then # a start may have leased it: no stop, and no mark for it to wait on
    aws ec2 delete-tags --region "$AWS_REGION" --resources "$id" --tags Key=wms:stopping || true
    exit 1
  fi
  if leased; then
    aws ec2 delete-tags --region "$AWS_REGION" --resources "$id" --tags Key=wms:stopping || true
    echo "instance $id was leased meanwhile (until $(date -u -d "@$latest" +%FT%TZ)): left running"
    exit 0
  fi
else
  echo "could not mark $id as stopping (its role may lack ec2:CreateTags): stopping it unmarked" >&2
fi
systemctl poweroff
