"""The lease reaper: stop every WMS-started instance whose leases all ran out.

`wms compute reap` runs it every 15 minutes (compute-reaper.yaml). Each expired instance is
first marked `wms:stopping` and read again, so a start that leased it meanwhile keeps it
(see wms.compute.ec2 for how starts and stops race through tags).

This module is the rest of `Ec2Compute`, kept in its own file, and uses that class's private
helpers; it waits for each stop through a copy bound to that instance (`of_instance`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wms.compute.base import ComputeStatus
from wms.compute.leases import MANAGED_TAG, STOPPING_TAG, lease_of, live_holders, utc_now

if TYPE_CHECKING:
    from wms.compute.ec2 import Ec2Compute


def reap(ec2: Ec2Compute) -> list[ComputeStatus]:
    """Stop every WMS-started instance whose lease ran out; report those left running too."""
    response = ec2._call(
        "list the instances WMS started",
        "describe_instances",
        Filters=[
            {"Name": f"tag:{MANAGED_TAG}", "Values": ["true"]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ],
    )
    now = utc_now()
    results, expired = [], []
    for instance in (i for r in response.get("Reservations", []) for i in r.get("Instances", [])):
        holders = live_holders(instance, now)
        if holders:
            until = lease_of(instance)
            results.append(
                ec2.status_of(
                    instance,
                    detail=f"lease runs until {until} (held by {', '.join(holders)}): left running",
                )
            )
        elif instance["State"]["Name"] == "pending":  # EC2 cannot stop it yet; the next round will
            results.append(ec2.status_of(instance, detail="lease expired but still starting: next round"))
        else:
            expired.append(instance)
    expired = _still_expired(ec2, expired, results)
    if not expired:
        return results
    ids = [i["InstanceId"] for i in expired]
    ec2.notify(f"lease expired: stopping {', '.join(ids)}")
    ec2._call(f"stop {', '.join(ids)}", "stop_instances", InstanceIds=ids)
    for instance in expired:
        one = ec2.of_instance(instance["InstanceId"])
        one._wait_state("stopped", ec2.cfg.stop_timeout_seconds)
        done = one._describe()
        one._clear_leases(done)
        expired_at = lease_of(instance)
        why = f"lease expired at {expired_at}" if expired_at else "no readable lease"
        results.append(ec2.status_of(done, detail=f"{why}: stopped"))
    return results


def _still_expired(
    ec2: Ec2Compute, expired: list[dict[str, Any]], results: list[ComputeStatus]
) -> list[dict[str, Any]]:
    """Mark each as stopping, then look again: one a start leased meanwhile is left running."""
    if not expired:
        return expired
    ids = [i["InstanceId"] for i in expired]
    mark = f"reaper {utc_now().isoformat(timespec='seconds')}"
    ec2._call(
        f"mark {', '.join(ids)} as stopping",
        "create_tags",
        Resources=ids,
        Tags=[{"Key": STOPPING_TAG, "Value": mark}],
    )
    response = ec2._call("read the leases again", "describe_instances", InstanceIds=ids)
    still = []
    for instance in (i for r in response.get("Reservations", []) for i in r.get("Instances", [])):
        holders = live_holders(instance, utc_now())
        if holders:
            ec2._call(
                f"unmark {instance['InstanceId']}",
                "delete_tags",
                Resources=[instance["InstanceId"]],
                Tags=[{"Key": STOPPING_TAG}],
            )
            detail = f"leased meanwhile by {', '.join(holders)}: left running"
            results.append(ec2.status_of(instance, detail=detail))
        else:
            still.append(instance)
    return still
