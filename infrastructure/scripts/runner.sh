#!/usr/bin/env bash
# Bootstrap step "runner": the GitHub Actions runner at RUNNER_VERSION in /opt/actions-runner,
# owned by RUNNER_USER, and wms-runner.service, which keeps one just-in-time runner online:
# runner-start.sh registers it for one job, the job runs, the runner exits, systemd starts the
# next. No token is stored here; runner-start.sh reads it from SSM at each start.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dir=/opt/actions-runner
case $(uname -m) in
  x86_64) arch=x64 ;;
  aarch64) arch=arm64 ;;
  *) log "no GitHub runner build for $(uname -m)"; exit 1 ;;
esac

if [ "$(cat "$dir/.wms-installed" 2>/dev/null || true)" != "$RUNNER_VERSION" ]; then
  log "installing the GitHub Actions runner $RUNNER_VERSION ($arch)"
  tmp=$(mktemp -d)
  tarball="actions-runner-linux-${arch}-${RUNNER_VERSION}.tar.gz"
  download "https://github.com/actions/runner/releases/download/v${RUNNER_VERSION}/$tarball" "$tmp/runner.tar.gz"
  # RUNNER_SHA256: Terraform's runner_sha256 of this version and architecture (it refuses a
  # runner_version without one); a tarball is never installed unchecked.
  if [ -z "${RUNNER_SHA256:-}" ]; then
    log "$tarball: no SHA-256 to check it against (runner_sha256): not installed"
    rm -rf "$tmp"
    exit 1
  elif ! verify_sha256 "$tmp/runner.tar.gz" "$RUNNER_SHA256" "$tarball (runner_sha256)"; then
    rm -rf "$tmp"
    exit 1
  fi
  install -d "$dir"
  tar -xzf "$tmp/runner.tar.gz" -C "$dir"
  rm -rf "$tmp"
  "$dir/bin/installdependencies.sh" >/dev/null
  echo "$RUNNER_VERSION" >"$dir/.wms-installed"
  chown -R "$RUNNER_USER:$RUNNER_USER" "$dir"
fi

# actions/setup-python's builds only work from /opt/hostedtoolcache, which the runner's
# unprivileged user must own.
install -d -o "$RUNNER_USER" -g "$RUNNER_USER" /opt/hostedtoolcache
# The jobs' pip keeps no cache (PIP_NO_CACHE_DIR below): what jobs cached before goes.
rm -rf "$(getent passwd "$RUNNER_USER" | cut -d: -f6)/.cache/pip"
changed=0
# Before every job, runner-job-started.sh fails a job whose workflow is not main's (a branch
# that changed .github/), before any of its steps run; after every job, runner-job-lease.sh
# drops its run's lease on the instance when the job ended before `wms` renewed it.
# pip keeps no cache: the tool cache's Python keeps what every job installed, so the cache would
# only add a copy of each new wheel (torch's among them) at every change of the pins, for good.
if put_file "$dir/.env" 0644 "$RUNNER_USER:$RUNNER_USER" <<ENV; then changed=1; fi
AGENT_TOOLSDIRECTORY=/opt/hostedtoolcache
PIP_NO_CACHE_DIR=1
LANG=C.UTF-8
ACTIONS_RUNNER_HOOK_JOB_STARTED=/usr/local/lib/wms/runner-job-started.sh
ACTIONS_RUNNER_HOOK_JOB_COMPLETED=/usr/local/lib/wms/runner-job-lease.sh
RUNNER_TOKEN_PARAMETER=$RUNNER_TOKEN_PARAMETER
AWS_REGION=$AWS_REGION
ENV

if put_file /etc/systemd/system/wms-runner.service 0644 <<UNIT; then changed=1; fi
# Written by the WMS bootstrap (runner.sh).
[Unit]
Description=GitHub Actions just-in-time runner $RUNNER_NAME ($RUNNER_LABELS), one job per registration
Wants=network-online.target
After=network-online.target wms-bootstrap.service
StartLimitIntervalSec=0

[Service]
User=$RUNNER_USER
WorkingDirectory=$dir
Environment=RUNNER_REPOSITORY=$GITHUB_REPOSITORY RUNNER_NAME=$RUNNER_NAME RUNNER_LABELS=$RUNNER_LABELS
Environment=RUNNER_TOKEN_PARAMETER=$RUNNER_TOKEN_PARAMETER AWS_REGION=$AWS_REGION
ExecStart=/usr/local/lib/wms/runner-start.sh
Restart=always
RestartSec=10
# The runner finishes or abandons its job cleanly on SIGINT.
KillSignal=SIGINT
TimeoutStopSec=60

[Install]
WantedBy=multi-user.target
UNIT

systemctl daemon-reload
systemctl enable wms-runner.service
# --no-block: the unit is ordered after wms-bootstrap.service, which is running this script.
if [ "$changed" -eq 1 ]; then
  systemctl restart --no-block wms-runner.service
else
  systemctl start --no-block wms-runner.service
fi
