#!/usr/bin/env bash
# The runner's post-job script (ACTIONS_RUNNER_HOOK_JOB_COMPLETED, set in the runner's .env by
# runner.sh); with `record`, the first step of its pre-job script (runner-job-started.sh).
#
# A workflow's start job leases the GPU instance for hours for its run (wms:lease:gh-run-<id>),
# as the run's job may wait that long for this one runner; once the job's `wms` runs, it cuts
# that lease to one compute.lease_minutes and renews it while it lives and once more as it ends
# (wms.compute.hold.keep_job_lease). A job that failed before `wms` ran (a checkout, an install)
# never cut it, and if the run's stop job failed too, the instance ran on for the rest of the
# start's hours. So `record` notes the run's lease as the job begins, and when the job ends a
# lease that nobody renewed in between is dropped: the job never got to `wms`.
#
# Other runs queued for this runner keep theirs: only this job's run's lease goes. And no job of
# this run is left queued here without its lease: a run has a later job on the instance (a
# deploy) only after this one succeeded, and every job here that succeeds has renewed its run's
# lease through `wms`. Dropping only ever shortens a lease, so the instance's role may delete
# these tags but write none: the instance can never keep itself running.
#
# Environment: the job's GITHUB_RUN_ID (none: nothing to do); the runner's AWS_REGION. It never
# fails the job: where EC2 cannot be asked, the lease runs out by itself.
set -euo pipefail

[ -n "${GITHUB_RUN_ID:-}" ] || exit 0
key="wms:lease:gh-run-$GITHUB_RUN_ID"
noted="${TMPDIR:-/tmp}/wms-job-lease-$GITHUB_RUN_ID"
imds=http://169.254.169.254/latest

# Prints this instance's id; fails when the instance metadata cannot be asked.
instance_id() {
  local token
  token=$(curl -sSf --connect-timeout 5 -X PUT "$imds/api/token" \
    -H "X-aws-ec2-metadata-token-ttl-seconds: 60") || return 1
  curl -sSf --connect-timeout 5 -H "X-aws-ec2-metadata-token: $token" "$imds/meta-data/instance-id"
}

# Prints this run's lease expiry on the instance `id` (empty: it holds none); fails when EC2
# cannot be asked.
lease() {
  local tags
  tags=$(aws ec2 describe-tags --region "$AWS_REGION" --filters "Name=resource-id,Values=$id" \
    --query Tags --output json 2>/dev/null) || return 1
  jq -r --arg key "$key" '[.[] | select(.Key == $key) | .Value][0] // ""' <<<"$tags"
}

case "${1:-drop}" in
  record)
    rm -f "$noted"
    if id=$(instance_id) && began=$(lease) && [ -n "$began" ]; then
      printf '%s\n' "$began" >"$noted"
    fi
    ;;
  drop)
    [ -f "$noted" ] || exit 0 # the run held no lease here as the job began
    began=$(cat "$noted")
    rm -f "$noted"
    if ! id=$(instance_id) || ! now=$(lease); then
      echo "cannot read the lease of run $GITHUB_RUN_ID; it runs out by itself" >&2
    elif [ "$now" = "$began" ]; then
      if aws ec2 delete-tags --region "$AWS_REGION" --resources "$id" --tags "Key=$key"; then
        echo "this job ended before \`wms\` renewed its run's lease (until $began): dropped it;" \
          "the instance stops unless another run holds it"
      else
        echo "could not drop the lease of run $GITHUB_RUN_ID (until $began); it runs out by itself" >&2
      fi
    fi
    ;;
esac
exit 0
