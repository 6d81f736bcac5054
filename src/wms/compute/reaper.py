"""The lease reaper: stop every WMS-started instance whose leases all ran out.

`wms compute reap` runs it every 15 minutes (compute-reaper.yaml). Each expired instance is
first marked `wms:stopping` and read again, so a start that leased it meanwhile keeps it
(see wms.compute.ec2 for how starts and stops race through tags).

It acts through `Ec2Compute`'s public steps of a stop (`managed_instances`, `mark_stopping`,
`request_stop`, `finish_stop`), each on a copy bound to one instance (`of_instance`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wms.compute.base import ComputeStatus
from wms.compute.leases import lease_of, live_holders, utc_now

if TYPE_CHECKING:
    from wms.compute.ec2 import Ec2Compute


def reap(ec2: Ec2Compute) -> list[ComputeStatus]:
    """Stop every WMS-started instance whose lease ran out; report those left running too."""
    now = utc_now()
    results: list[ComputeStatus] = []
    expired = []
    for instance in ec2.managed_instances():
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
    stopping = []
    for instance in expired:  # mark each, then look again: one a start leased meanwhile stays
        one = ec2.of_instance(instance["InstanceId"])
        again = one.mark_stopping("reaper")
        if holders := live_holders(again, utc_now()):
            one.unmark_stopping()
            detail = f"leased meanwhile by {', '.join(holders)}: left running"
            results.append(ec2.status_of(again, detail=detail))
        else:
            stopping.append((one, instance))
    if not stopping:
        return results
    ec2.notify(f"lease expired: stopping {', '.join(i['InstanceId'] for _, i in stopping)}")
    for one, _ in stopping:  # all asked first, so one slow stop does not hold the others up
        one.request_stop()
    for one, instance in stopping:
        done = one.finish_stop()
        expired_at = lease_of(instance)
        why = f"lease expired at {expired_at}" if expired_at else "no readable lease"
        results.append(ec2.status_of(done, detail=f"{why}: stopped"))
    return results
