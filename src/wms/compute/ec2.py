"""EC2 compute: start and stop one instance with boto3, and a lease tag as a dead-man switch.

    compute.backend = "ec2"   # AWS_* variables (AWS_ENDPOINT_URL included) pick account and endpoint

The instance is `compute.instance_id`, or the one tagged `compute.instance_tag`. `start`
tags it `wms:managed=true` and `wms:lease-expires=<ISO time>` *before* starting it, so even
a caller killed while waiting leaves a lease that `wms compute reap` can act on.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from wms.compute.base import ComputeStatus, Notify, RunnerProbe, quiet, wait_for
from wms.compute.probes import make_probe, mlflow_url
from wms.config import ComputeSettings
from wms.errors import BackendError, ConfigError

LEASE_TAG = "wms:lease-expires"
MANAGED_TAG = "wms:managed"
LIVE_STATES = ["pending", "running", "stopping", "stopped"]


def _now() -> datetime:
    return datetime.now(UTC)


def lease_of(instance: dict[str, Any]) -> datetime | None:
    """The lease expiry tagged on an instance; None when absent or unreadable."""
    for tag in instance.get("Tags", []):
        if tag["Key"] == LEASE_TAG:
            try:
                expires = datetime.fromisoformat(tag["Value"])
            except ValueError:
                return None
            return expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    return None


def _stopped_at(instance: dict[str, Any]) -> datetime | None:
    # EC2 writes e.g. "User initiated (2026-01-02 03:04:05 GMT)" when an instance stops.
    match = re.search(
        r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?:GMT|UTC)\)", instance.get("StateTransitionReason", "")
    )
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) if match else None


class Ec2Compute:
    """One EC2 instance, found by id or tag; every wait has a limit and says what it waits for."""

    name = "ec2"

    def __init__(
        self,
        cfg: ComputeSettings,
        runner_probe: RunnerProbe | None = None,
        notify: Notify = quiet,
        client: Any = None,
    ) -> None:
        self.cfg = cfg
        self.notify = notify
        self.probe = make_probe(cfg, runner_probe)  # a bad probe setting fails before anything starts
        self._client = client
        self._id: str | None = cfg.instance_id or None

    # -- AWS calls --------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3.session
                from botocore.exceptions import NoRegionError
            except ImportError:
                raise ConfigError(
                    "compute.backend = \"ec2\" needs boto3; install it with: pip install 'wms[ec2]'"
                ) from None

            try:
                # A session of its own: the default one keeps the credentials it first found.
                session = boto3.session.Session(region_name=self.cfg.region or None)
                self._client = session.client("ec2")
            except NoRegionError:
                raise ConfigError(
                    "no AWS region: set compute.region in wms.toml or AWS_DEFAULT_REGION"
                ) from None
        return self._client

    def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return getattr(self.client, method)(**kwargs)
        except NoCredentialsError:
            raise BackendError(
                f"no AWS credentials to {what}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE)"
            ) from None
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise BackendError(
                f"EC2 refused to {what}: {err.get('Code', '?')}: {err.get('Message', exc)}; "
                "check the AWS credentials and the compute.* settings"
            ) from None
        except BotoCoreError as exc:
            raise BackendError(f"cannot reach EC2 to {what}: {exc}") from None

    def _target(self) -> str:
        if self._id:
            return f"instance {self._id}"
        return f"the instance tagged {self.cfg.instance_tag}"

    def _describe(self) -> dict[str, Any]:
        if self._id:
            response = self._call(f"describe {self._id}", "describe_instances", InstanceIds=[self._id])
        else:
            key, _, value = self.cfg.instance_tag.partition("=")
            response = self._call(
                f"find {self._target()}",
                "describe_instances",
                Filters=[
                    {"Name": f"tag:{key}", "Values": [value]},
                    {"Name": "instance-state-name", "Values": LIVE_STATES},
                ],
            )
        instances = [i for r in response.get("Reservations", []) for i in r.get("Instances", [])]
        if not instances:
            raise BackendError(
                f"no EC2 instance tagged {self.cfg.instance_tag} in this region; create it with "
                "infrastructure/terraform, or set compute.instance_id / compute.region"
            )
        if len(instances) > 1:
            ids = ", ".join(i["InstanceId"] for i in instances)
            raise BackendError(
                f"{len(instances)} instances are tagged {self.cfg.instance_tag} ({ids}); "
                "set compute.instance_id to the one WMS should use"
            )
        self._id = instances[0]["InstanceId"]
        return instances[0]

    def _state(self) -> str:
        return str(self._describe()["State"]["Name"])

    def _wait_state(self, wanted: str, timeout: float) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            instance = self._describe()
            return instance if instance["State"]["Name"] == wanted else None

        return wait_for(
            check,
            f"{self._target()} to be {wanted}",
            timeout,
            self.cfg.poll_seconds,
            self.notify,
            hint="look at the instance in the EC2 console; raise compute.start_timeout_seconds "
            "or compute.stop_timeout_seconds if it is only slow",
        )

    def _status_checks_ok(self) -> bool | None:
        response = self._call(
            f"read the status checks of {self._id}",
            "describe_instance_status",
            InstanceIds=[self._id],
        )
        for item in response.get("InstanceStatuses", []):
            if item["InstanceStatus"]["Status"] == "ok" and item["SystemStatus"]["Status"] == "ok":
                return True
        return None

    # -- the lease --------------------------------------------------------------------------
    def renew_lease(self) -> str:
        """Move the lease expiry to now + compute.lease_minutes; returns the new expiry."""
        if self._id is None:
            self._describe()
        expires = (_now() + timedelta(minutes=self.cfg.lease_minutes)).isoformat(timespec="seconds")
        self._call(
            f"tag {self._id} with its lease",
            "create_tags",
            Resources=[self._id],
            Tags=[{"Key": MANAGED_TAG, "Value": "true"}, {"Key": LEASE_TAG, "Value": expires}],
        )
        return expires

    def _clear_lease(self) -> None:
        self._call(
            f"remove the lease of {self._id}", "delete_tags", Resources=[self._id], Tags=[{"Key": LEASE_TAG}]
        )

    # -- the verbs ----------------------------------------------------------------------------
    def start(self) -> ComputeStatus:
        """Start the instance (a running one is left as it is) and wait for its status checks."""
        state = self._state()
        if state in ("shutting-down", "terminated"):
            raise BackendError(f"instance {self._id} is {state}; recreate it with infrastructure/terraform")
        self.renew_lease()
        cfg = self.cfg
        if state == "stopping":
            self.notify(f"instance {self._id} is stopping; it starts again once stopped")
            self._wait_state("stopped", cfg.stop_timeout_seconds)
            state = "stopped"
        if state == "stopped":
            self.notify(f"starting instance {self._id}")
            self._call(f"start {self._id}", "start_instances", InstanceIds=[self._id])
        if state != "running":
            self._wait_state("running", cfg.start_timeout_seconds)
        wait_for(
            self._status_checks_ok,
            f"the status checks of instance {self._id}",
            cfg.start_timeout_seconds,
            cfg.poll_seconds,
            self.notify,
            hint="an impaired instance needs a look in the EC2 console (stop it with `wms compute stop`)",
        )
        return self.status()

    def wait_ready(self) -> ComputeStatus:
        """Wait until the configured readiness probe answers (nothing to wait for with `none`)."""
        current = self.status()
        if self.probe is None:
            return current
        what, probe = self.probe
        host = self.cfg.host or current.public_ip
        if not host:
            raise BackendError(
                f"instance {self._id} has no public IP to probe; attach the Elastic IP "
                "(infrastructure/terraform) or set compute.host"
            )
        wait_for(
            lambda: True if probe(host) else None,
            f"{what} at {host}",
            self.cfg.start_timeout_seconds,
            self.cfg.poll_seconds,
            self.notify,
            hint="the instance runs but its service does not answer; check it over SSH",
        )
        return current

    def stop(self) -> ComputeStatus:
        """Stop the instance and wait until it is stopped (a stopped one is left as it is)."""
        instance = self._describe()
        state = instance["State"]["Name"]
        if state in ("shutting-down", "terminated"):
            return self._to_status(instance)
        launched = instance.get("LaunchTime")
        cfg = self.cfg
        if state == "pending":
            self.notify(f"instance {self._id} is still starting; it is stopped once running")
            self._wait_state("running", cfg.start_timeout_seconds)
            state = "running"
        if state == "running":
            self.notify(f"stopping instance {self._id}")
            self._call(f"stop {self._id}", "stop_instances", InstanceIds=[self._id])
        if state != "stopped":
            instance = self._wait_state("stopped", cfg.stop_timeout_seconds)
        self._clear_lease()
        billed = None
        if state != "stopped" and launched is not None:
            billed = round((_now() - launched).total_seconds(), 1)
        return self._to_status(self._describe(), billed)

    def status(self) -> ComputeStatus:
        return self._to_status(self._describe())

    def reap(self) -> list[ComputeStatus]:
        """Stop every WMS-started instance whose lease ran out; report those left running too."""
        response = self._call(
            "list the instances WMS started",
            "describe_instances",
            Filters=[
                {"Name": f"tag:{MANAGED_TAG}", "Values": ["true"]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ],
        )
        now = _now()
        results, expired = [], []
        for instance in (i for r in response.get("Reservations", []) for i in r.get("Instances", [])):
            expires = lease_of(instance)
            if expires is not None and expires > now:
                results.append(self._to_status(instance, detail=f"lease runs until {expires}: left running"))
            elif instance["State"]["Name"] == "pending":  # EC2 cannot stop it yet; the next round will
                results.append(
                    self._to_status(instance, detail="lease expired but still starting: next round")
                )
            else:
                expired.append(instance)
        if not expired:
            return results
        ids = [i["InstanceId"] for i in expired]
        self.notify(f"lease expired: stopping {', '.join(ids)}")
        self._call(f"stop {', '.join(ids)}", "stop_instances", InstanceIds=ids)
        own = self._id
        try:
            for instance in expired:
                self._id = instance["InstanceId"]
                done = self._wait_state("stopped", self.cfg.stop_timeout_seconds)
                self._clear_lease()
                expired_at = lease_of(instance)
                why = f"lease expired at {expired_at}" if expired_at else "no readable lease"
                results.append(self._to_status(done, detail=f"{why}: stopped"))
        finally:
            self._id = own
        return results

    def _to_status(
        self, instance: dict[str, Any], billed: float | None = None, detail: str = ""
    ) -> ComputeStatus:
        state = instance["State"]["Name"]
        cfg = self.cfg
        public_ip = instance.get("PublicIpAddress")
        host = cfg.host or public_ip
        launched = instance.get("LaunchTime")
        if billed is None and launched is not None:
            if state in ("pending", "running", "stopping"):
                billed = round((_now() - launched).total_seconds(), 1)
            elif (stopped := _stopped_at(instance)) is not None and stopped >= launched:
                billed = round((stopped - launched).total_seconds(), 1)
        expires = lease_of(instance)
        port = "" if cfg.ssh_port == 22 else f" -p {cfg.ssh_port}"
        return ComputeStatus(
            backend=self.name,
            state=state,
            detail=detail or f"{instance.get('InstanceType', '?')} {instance['InstanceId']}",
            instance_id=instance["InstanceId"],
            public_ip=public_ip,
            mlflow_url=mlflow_url(cfg, host) if host else None,
            ssh_command=f"ssh -i {cfg.ssh_key}{port} {cfg.ssh_user}@{host}" if host else None,
            lease_expires=expires.isoformat() if expires else None,
            billed_seconds=billed,
        )
