#!/usr/bin/env bash
# The runner's pre-job script (ACTIONS_RUNNER_HOOK_JOB_STARTED, set in the runner's .env by
# runner.sh): runs before every job this runner takes, and fails the job before any of its
# steps when the commit the job's workflow comes from changed .github/ against the default
# branch. GitHub reads a workflow from the pushed ref, so anyone who may push a branch could
# otherwise run a workflow of their own here, with what this machine has (docker, the k3s
# admin config, the instance role); changes to .github/ reach these runners through main only.
#
# Environment: the job's (GITHUB_REPOSITORY, GITHUB_SHA, GITHUB_WORKFLOW_SHA) and the runner's
# (RUNNER_TOKEN_PARAMETER, AWS_REGION; RUNNER_API_URL for GitHub Enterprise). The token, read
# from SSM as runner-start.sh reads it, needs Contents: read besides Administration: write.
set -euo pipefail

# Notes this job's run's lease on the instance as the job begins: runner-job-lease.sh, the
# post-job script, drops it at the job's end if no `wms` of the job renewed it. Never fails.
"$(dirname "${BASH_SOURCE[0]}")/runner-job-lease.sh" record || true

repo="${RUNNER_API_URL:-https://api.github.com}/repos/${GITHUB_REPOSITORY}"
sha="${GITHUB_WORKFLOW_SHA:-$GITHUB_SHA}"
if ! token=$(aws ssm get-parameter --region "$AWS_REGION" --name "$RUNNER_TOKEN_PARAMETER" \
  --with-decryption --query Parameter.Value --output text); then
  echo "::error::cannot read the SSM parameter $RUNNER_TOKEN_PARAMETER to check this job's workflow" >&2
  exit 1
fi

github() {
  # The header comes from a file descriptor, so the token never appears in a process's argv.
  curl -sS --fail-with-body --retry 3 --connect-timeout 20 \
    -H @<(printf 'Authorization: Bearer %s\n' "$token") \
    -H "Accept: application/vnd.github+json" -H "X-GitHub-Api-Version: 2022-11-28" "$@"
}

# The .github folder of a commit: its tree's id, or "none".
dot_github() {
  local tree
  tree=$(github "$repo/git/trees/$1") || { echo "GitHub refused to read the tree of $1: $tree" >&2; return 1; }
  jq -r '[.tree[] | select(.path == ".github" and .type == "tree") | .sha][0] // "none"' <<<"$tree"
}

if ! answer=$(github "$repo"); then
  echo "::error::GitHub refused to describe $GITHUB_REPOSITORY (the runner token needs Contents: read): $answer" >&2
  exit 1
fi
main=$(jq -er '.default_branch' <<<"$answer")
if ! answer=$(github "$repo/compare/$main...$sha?per_page=1"); then
  echo "::error::GitHub refused to compare $sha with $main: $answer" >&2
  exit 1
fi
base=$(jq -er '.merge_base_commit.sha' <<<"$answer")
if ! ours=$(dot_github "$sha") || ! theirs=$(dot_github "$base"); then
  echo "::error::cannot read the .github/ folder of ${sha:0:12} or ${base:0:12} to check this job's workflow" >&2
  exit 1
fi
if [ "$ours" != "$theirs" ]; then
  echo "::error::commit ${sha:0:12} changes .github/ against $main (since ${base:0:12}): a workflow or" \
    "action that is not on $main does not run on this self-hosted runner; change .github/ through a" \
    "pull request into $main" >&2
  exit 1
fi
echo "the workflow of ${sha:0:12} is $main's (.github/ unchanged since ${base:0:12})"
