"""An EC2 instance as `wms compute status` shows it: state, address, lease and the time it was billed."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Any

from wms.compute.base import ComputeStatus
from wms.compute.leases import lease_of, live_holders, maintenance_of, utc_now
from wms.compute.probes import mlflow_url
from wms.config import ComputeSettings


def stopped_at(instance: dict[str, Any]) -> datetime | None:
    """When the instance last stopped, read from EC2's StateTransitionReason."""
    # EC2 writes e.g. "User initiated (2026-01-02 03:04:05 GMT)" when an instance stops.
    match = re.search(
        r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?:GMT|UTC)\)", instance.get("StateTransitionReason", "")
    )
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) if match else None


def stale_host(cfg: ComputeSettings, status: ComputeStatus) -> str | None:
    """What to do when compute.host is a private IP the instance does not have (else None).

    WMS_GPU_HOST, set by hand from an older `terraform output`, still names the address of the
    instance that a replacement removed; every wait for the new one would run out before saying so.
    """
    try:
        address = ipaddress.ip_address(cfg.host)
    except ValueError:  # empty, or a name: nothing to compare
        return None
    if address.is_loopback or not address.is_private or cfg.host in (status.public_ip, status.private_ip):
        return None
    return (
        f"compute.host {cfg.host} is no address of instance {status.instance_id} (private "
        f"{status.private_ip}): left from a replaced instance? Unset it (the repository variable "
        f"WMS_GPU_HOST) to reach the instance at its {cfg.address} address, read at each start"
    )


def instance_status(
    backend: str,
    cfg: ComputeSettings,
    instance: dict[str, Any],
    billed: float | None = None,
    detail: str = "",
) -> ComputeStatus:
    """The status of `instance` (a describe_instances entry); `billed` defaults to its time up."""
    state = instance["State"]["Name"]
    public_ip, private_ip = instance.get("PublicIpAddress"), instance.get("PrivateIpAddress")
    host = cfg.host or (private_ip if cfg.address == "private" else public_ip)
    launched = instance.get("LaunchTime")
    if billed is None and launched is not None:
        if state in ("pending", "running", "stopping"):
            billed = round((utc_now() - launched).total_seconds(), 1)
        elif (stopped := stopped_at(instance)) is not None and stopped >= launched:
            billed = round((stopped - launched).total_seconds(), 1)
    expires = lease_of(instance)
    held = maintenance_of(instance, utc_now())
    port = "" if cfg.ssh_port == 22 else f" -p {cfg.ssh_port}"
    return ComputeStatus(
        backend=backend,
        state=state,
        detail=detail or f"{instance.get('InstanceType', '?')} {instance['InstanceId']}",
        instance_id=instance["InstanceId"],
        public_ip=public_ip,
        private_ip=private_ip,
        host=host,
        mlflow_url=mlflow_url(cfg, host) if host and cfg.mlflow_on_instance else None,
        ssh_command=f"ssh -i {cfg.ssh_key}{port} {cfg.ssh_user}@{host}" if host else None,
        lease_expires=expires.isoformat() if expires else None,
        held_by=", ".join(live_holders(instance, utc_now())) or None,
        maintenance=f"until {held[1].isoformat()} by {held[0]}" if held else None,
        billed_seconds=billed,
    )
