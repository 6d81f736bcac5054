"""Maintenance of the EC2 instance: no run starts it while a `terraform apply` may stop it.

    wms compute maintenance --minutes 30   # starts wait from now; exit 1 while a run still holds it
    terraform apply                        # may stop and start the instance (user data, type)
    wms compute maintenance --end          # the waiting starts go on

`wms compute status --idle` says whether a run holds the instance now, but a run can start
between that check and the apply's stop (the apply's plan waits for a person's "yes"). The
maintenance tag closes that gap: `Ec2Compute.start` waits while it lasts, before it takes a
lease, so the idle check stays true, and the batch runs once maintenance ends (nothing is
refused, no attempt of the batch is spent). The tag and a start's lease race as a stop and a
start do (wms.compute.ec2): each writes its tag, then reads the other's, so one of the two sees
the other; a start that finds maintenance begun after its lease drops the lease and waits.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from wms.compute.base import wait_for
from wms.compute.ec2_instance import Ec2Instance
from wms.compute.leases import MAINTENANCE_TAG, maintenance_of, mark, utc_now


class Ec2Maintenance(Ec2Instance):
    """The maintenance tag's verbs, which `Ec2Compute` extends with the leases."""

    # The maintenance (who, until) a start is waiting out now, holding no lease; None otherwise.
    waiting_out: tuple[str, datetime] | None = None

    def begin_maintenance(self, who: str, minutes: float) -> tuple[datetime, dict[str, Any]]:
        """Hold the instance for maintenance for `minutes` from now; returns its end, and the
        instance as read after the tag, where the leases of the runs that started before show
        (they go on; the apply waits for them)."""
        self._describe()  # finds the instance by its tag, or says it cannot
        end = (utc_now() + timedelta(minutes=minutes)).replace(microsecond=0)  # as the tag has it
        self._tag(f"hold {self._target()} for maintenance", {MAINTENANCE_TAG: mark(who, end)})
        return end, self._describe()

    def end_maintenance(self) -> str:
        """End maintenance: the starts that wait for it go on. Returns the instance's id."""
        instance_id = str(self._describe()["InstanceId"])
        self._untag(MAINTENANCE_TAG)
        return instance_id

    def wait_out_maintenance(self) -> None:
        """Return once the instance is under no maintenance; while it is, say so and wait (to its
        end, or to an earlier `--end`; a maintenance begun again for longer is waited out too)."""
        while (held := maintenance_of(self._describe(), utc_now())) is not None:
            who, until = self.waiting_out = held
            self.notify(
                f"{self._target()} is held for maintenance by {who} until {until:%Y-%m-%d %H:%M:%S} UTC "
                "(`wms compute maintenance`); this start waits for it to end"
            )
            wait_for(
                lambda: True if maintenance_of(self._describe(), utc_now()) != held else None,
                f"the maintenance of {self._target()} to end",
                (until - utc_now()).total_seconds() + self.cfg.poll_seconds,
                self.cfg.poll_seconds,
                self.notify,
                hint="`wms compute maintenance --end` ends it",
            )
        self.waiting_out = None
