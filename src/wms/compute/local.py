"""Local compute: training runs on this machine, so there is nothing to start or stop."""

from __future__ import annotations

from datetime import datetime

from wms.compute.base import ComputeStatus


class LocalCompute:
    """The default backend; every verb is a no-op that reports this machine (holders are ignored)."""

    name = "local"
    waiting_out: tuple[str, datetime] | None = None  # no maintenance here

    def start(self, holder: str | None = None) -> ComputeStatus:
        return self.status()

    def wait_ready(self) -> ComputeStatus:
        return self.status()

    def stop(self, holder: str | None = None, sub_leases: bool = False) -> ComputeStatus:
        return ComputeStatus(self.name, "stopped", "nothing to release on this machine")

    def status(self) -> ComputeStatus:
        return ComputeStatus(self.name, "running", "this machine")

    def take_lease(self, holder: str | None = None) -> None:
        return None

    def renew_lease(self, holder: str | None = None, held_only: bool = False) -> str | None:
        return None

    def release_lease(self, holder: str | None = None) -> None:
        return None

    def reap(self) -> list[ComputeStatus]:
        return []

    def interruption(self, holder: str | None = None) -> str | None:
        return None  # this machine does not go away under its own jobs
