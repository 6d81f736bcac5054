#!/usr/bin/env bash
# ExecStart of wms-runner.service (as the runner's user): registers a just-in-time runner for
# one job and runs it. The GitHub token (a fine-grained PAT with Administration: write on the
# repository; an App installation token expires within the hour) is read from the SSM
# SecureString RUNNER_TOKEN_PARAMETER here, used for the REST calls below and dropped: it is in
# no file, no command line and no log.
#
# Environment (set by the unit): RUNNER_REPOSITORY (owner/name), RUNNER_NAME, RUNNER_LABELS
# (comma-separated), RUNNER_TOKEN_PARAMETER, AWS_REGION; RUNNER_API_URL for GitHub Enterprise
# (default https://api.github.com). TEXTFILE_DIR: node-exporter's textfile folder, where it exists
# (monitoring.sh makes it), gets the token's expiry as wms_github_token_expiry_seconds.
set -euo pipefail

api="${RUNNER_API_URL:-https://api.github.com}/repos/${RUNNER_REPOSITORY}/actions/runners"
if ! token=$(aws ssm get-parameter --region "$AWS_REGION" --name "$RUNNER_TOKEN_PARAMETER" \
  --with-decryption --query Parameter.Value --output text); then
  echo "cannot read the SSM parameter $RUNNER_TOKEN_PARAMETER; create it with" \
    "aws ssm put-parameter --region $AWS_REGION --type SecureString --name $RUNNER_TOKEN_PARAMETER --value <token>" >&2
  exit 1
fi

headers=$(mktemp)
trap 'rm -f "$headers"' EXIT
github() {
  # The header comes from a file descriptor, so the token never appears in a process's argv.
  curl -sS --fail-with-body --retry 3 --connect-timeout 20 -D "$headers" \
    -H @<(printf 'Authorization: Bearer %s\n' "$token") \
    -H "Accept: application/vnd.github+json" -H "X-GitHub-Api-Version: 2022-11-28" "$@"
}

# A runner registered but never used (the machine was stopped while it waited) stays behind,
# offline, under the same name; GitHub refuses a second one with that name.
renew="make a new one (docs/aws.md, step 3) and put it in with aws ssm put-parameter --overwrite --region $AWS_REGION --type SecureString --name $RUNNER_TOKEN_PARAMETER --value <token>"
if ! runners=$(github "$api?name=$RUNNER_NAME"); then
  if grep -q '^HTTP/[0-9.]* 401' "$headers"; then
    echo "GitHub refused the runner token in SSM $RUNNER_TOKEN_PARAMETER (401: expired or revoked); $renew" >&2
  else
    echo "GitHub refused to list the runners of $RUNNER_REPOSITORY: $runners" >&2
  fi
  exit 1
fi
# A fine-grained token always expires; GitHub names the date in every answer. Without a runner
# token no job of the self-hosted runners starts, so the date goes to the journal and the gauge.
expires=$(tr -d '\r' <"$headers" | sed -n 's/^[Gg]it[Hh]ub-[Aa]uthentication-[Tt]oken-[Ee]xpiration: *//p' | tail -1)
gauge=${TEXTFILE_DIR:-/var/lib/node-exporter/textfile}
if [ -n "$expires" ] && expiry=$(date -d "$expires" +%s); then
  days=$(((expiry - $(date +%s)) / 86400))
  echo "the runner token in SSM $RUNNER_TOKEN_PARAMETER expires on $expires (in $days days)"
  if [ "$days" -lt 14 ]; then echo "the runner token expires in $days days; before then, $renew" >&2; fi
  if [ -d "$gauge" ]; then
    printf 'wms_github_token_expiry_seconds{token="runner"} %s\n' "$expiry" >"$gauge/wms_github_token.prom.tmp"
    mv "$gauge/wms_github_token.prom.tmp" "$gauge/wms_github_token.prom"
  fi
elif [ -d "$gauge" ]; then
  rm -f "$gauge/wms_github_token.prom"  # a token that does not expire
fi
for id in $(jq -r '.runners[] | select(.status == "offline") | .id' <<<"$runners"); do
  github -X DELETE "$api/$id" >/dev/null
  echo "removed the offline runner $RUNNER_NAME ($id) left by an earlier start"
done

case $(uname -m) in
  aarch64) arch=ARM64 ;;
  *) arch=X64 ;;
esac
body=$(jq -n --arg name "$RUNNER_NAME" --arg labels "self-hosted,linux,$arch,$RUNNER_LABELS" \
  '{name: $name, runner_group_id: 1, labels: ($labels | split(",")), work_folder: "_work"}')
if ! response=$(github -X POST "$api/generate-jitconfig" -d "$body"); then
  echo "GitHub refused to register the runner $RUNNER_NAME: $response" >&2
  exit 1
fi
token=""
rm -f "$headers" # exec below skips the EXIT trap
jit=$(jq -er '.encoded_jit_config' <<<"$response")

echo "runner $RUNNER_NAME registered (labels self-hosted,linux,$arch,$RUNNER_LABELS); waiting for a job"
exec ./run.sh --jitconfig "$jit"
