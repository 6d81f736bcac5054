"""The lease tags on a shared instance: who holds it, until when, and whether a stop is under way.

    wms:managed        = true
    wms:lease:<holder> = <ISO expiry>            one per holder (a workflow run, a person)
    wms:lease-expires  = <ISO expiry>            the latest of them, for people and older readers
    wms:stopping       = <holder> <ISO time>     while a stop decides or runs
    wms:lease-holders  = true                    leases are the holder tags: the summary alone holds nothing
    wms:maintenance    = <who> <ISO end>         no start takes a lease until then (wms.compute.maintenance)

Pure functions over the instance dictionaries EC2's DescribeInstances returns.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from wms.errors import ConfigError
from wms.times import parse_time

LEASE_TAG = "wms:lease-expires"  # the latest expiry of all leases, for people and older readers
HOLDER_TAG_PREFIX = "wms:lease:"  # one tag per holder: wms:lease:<holder> = <ISO expiry>
STOPPING_TAG = "wms:stopping"  # <holder> <ISO time>, while a stop is deciding or under way
MANAGED_TAG = "wms:managed"
MAINTENANCE_TAG = "wms:maintenance"  # <who> <ISO end>: starts wait until then, or until it goes
# Written with every holder's lease: on such an instance a summary left without holder tags
# (two stops at once, each keeping it for the other) is stale, not a lease.
HOLDERS_TAG = "wms:lease-holders"
# Who holds a lease when the holder tags are absent (an instance tagged by an older WMS).
UNNAMED = "(unnamed)"


def utc_now() -> datetime:
    """The clock leases are read against (EC2 writes its times in UTC)."""
    return datetime.now(UTC)


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}


def holder_tag(holder: str) -> str:
    """The tag key of `holder`'s lease; characters EC2 tag keys refuse become `-`."""
    clean = re.sub(r"[^A-Za-z0-9 _.:/=+@-]", "-", holder.strip())[: 128 - len(HOLDER_TAG_PREFIX)]
    if not clean:
        raise ConfigError("a compute lease needs a holder name, e.g. --holder gh-run-123 or user@host")
    return HOLDER_TAG_PREFIX + clean


def leases_of(instance: dict[str, Any]) -> dict[str, datetime | None]:
    """Every holder's lease expiry (None when unreadable); the summary tag when no holder tags,
    on an instance an older WMS tagged (one without `wms:lease-holders`)."""
    tags = tags_of(instance)
    leases = {
        key[len(HOLDER_TAG_PREFIX) :]: parse_time(value)
        for key, value in tags.items()
        if key.startswith(HOLDER_TAG_PREFIX)
    }
    if not leases and LEASE_TAG in tags and HOLDERS_TAG not in tags:
        leases[UNNAMED] = parse_time(tags[LEASE_TAG])
    return leases


def lease_of(instance: dict[str, Any]) -> datetime | None:
    """The latest lease expiry on an instance; None when it has no readable lease."""
    times = [t for t in leases_of(instance).values() if t is not None]
    return max(times) if times else None


def held_by(holder: str, me: str) -> bool:
    """Whether `holder` is `me` or one of its own sub-holders: `gh-run-7-pipeline` is gh-run-7's
    (the pipeline that run started), `gh-run-77` is not."""
    return holder == me or holder.startswith(f"{me}-")


def live_holders(instance: dict[str, Any], now: datetime) -> list[str]:
    """The holders whose lease has not run out."""
    return sorted(h for h, t in leases_of(instance).items() if t is not None and t > now)


def interruption_of(instance: dict[str, Any], holder: str, now: datetime) -> str | None:
    """Why the instance went down under `holder`'s live lease: its StateReason code; else None.

    WMS never stops an instance under a live lease: `stop` drops the caller's lease first, and
    stops only when no other lease is live; the reaper only once every lease ran out. So a
    stopping, stopped or pending (started again) instance on which `holder` still holds a live
    lease was stopped from outside: a spot reclaim (Server.SpotInstanceShutdown), a maintenance
    stop, someone in the console. The code is reported whatever it is.
    """
    if instance["State"]["Name"] not in ("pending", "stopping", "stopped"):
        return None
    expiry = leases_of(instance).get(holder_tag(holder)[len(HOLDER_TAG_PREFIX) :])
    if expiry is None or expiry <= now:
        return None
    reason = instance.get("StateReason") or {}
    return str(reason.get("Code") or instance.get("StateTransitionReason") or "no reason given")


def mark(who: str, when: datetime) -> str:
    """The value of a `<who> <ISO time>` tag (wms:stopping, wms:maintenance)."""
    return f"{who} {when.isoformat(timespec='seconds')}"


def read_mark(value: str) -> tuple[str, datetime | None]:
    """Who wrote a `<who> <ISO time>` tag and its time (None where it is not a time)."""
    who, _, when = value.rpartition(" ")
    return who, parse_time(when)


def maintenance_of(instance: dict[str, Any], now: datetime) -> tuple[str, datetime] | None:
    """Who holds the instance for maintenance and until when, while that lasts; else None (an
    end that is not a time counts as none: a start must never wait on a tag it cannot read)."""
    who, until = read_mark(tags_of(instance).get(MAINTENANCE_TAG, ""))
    return (who or "someone", until) if until is not None and until > now else None
