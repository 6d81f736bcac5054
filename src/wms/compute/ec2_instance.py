"""One EC2 instance and the boto3 calls WMS makes on it: find, describe, tag, wait.

The instance is `compute.instance_id`, or the one tagged `compute.instance_tag`; once found,
its id is kept. Every call goes through `aws_errors`, so a refusal reads as one line, and every
wait through EC2's waiters (wms.compute.aws). What the tags mean (leases, the stopping mark)
and when to start or stop is wms.compute.ec2's business, not this module's.
"""

from __future__ import annotations

import copy
from typing import Any, Self

from wms.compute.aws import aws_errors, ec2_client, wait
from wms.compute.base import Notify, quiet
from wms.config import ComputeSettings
from wms.errors import BackendError

LIVE_STATES = ["pending", "running", "stopping", "stopped"]


class Ec2Instance:
    """The instance WMS manages, found by id or tag, and the EC2 API calls made on it."""

    def __init__(self, cfg: ComputeSettings, notify: Notify = quiet, client: Any = None) -> None:
        self.cfg = cfg
        self.notify = notify
        self._client = client
        self._id: str | None = cfg.instance_id or None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = ec2_client(self.cfg.region)
        return self._client

    def of_instance(self, instance_id: str) -> Self:
        """The same settings and AWS client, acting on another instance (the reaper stops many)."""
        other = copy.copy(self)
        other._client = self.client
        other._id = instance_id
        return other

    def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        with aws_errors(what):
            return getattr(self.client, method)(**kwargs)

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

    def _tag(self, what: str, tags: dict[str, str]) -> None:
        """Write `tags` on the instance; `what` says what for, should EC2 refuse."""
        self._call(
            what,
            "create_tags",
            Resources=[self._id],
            Tags=[{"Key": key, "Value": value} for key, value in tags.items()],
        )

    def _untag(self, *keys: str) -> None:
        if keys:
            self._call(
                f"remove tags from {self._id}",
                "delete_tags",
                Resources=[self._id],
                Tags=[{"Key": key} for key in keys],
            )

    def _wait(self, waiters: list[str], what: str, timeout: float, hint: str) -> None:
        ids = {"InstanceIds": [self._id]}
        wait(self.client, waiters, what, timeout, self.cfg.poll_seconds, ids, self.notify, hint)

    def _wait_state(self, wanted: str, timeout: float) -> None:
        """Wait through EC2's waiter until the instance is `wanted` (running, stopped)."""
        hint = (
            "look at the instance in the EC2 console; raise compute.start_timeout_seconds "
            "or compute.stop_timeout_seconds if it is only slow"
        )
        self._wait([f"instance_{wanted}"], f"{self._target()} to be {wanted}", timeout, hint)
