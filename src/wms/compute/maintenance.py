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

from datetime import timedelta

from wms.compute.base import wait_for
from wms.compute.ec2_instance import Ec2Instance
from wms.compute.leases import MAINTENANCE_TAG, live_holders, maintenance_of, utc_now


class Ec2Maintenance(Ec2Instance):
    """The maintenance tag's verbs, which `Ec2Compute` extends with the leases."""

    def begin_maintenance(self, who: str, minutes: float) -> list[str]:
        """Hold the instance for maintenance for `minutes` from now; returns the runs that still
        hold a live lease (they go on, and the apply waits for them)."""
        end = (utc_now() + timedelta(minutes=minutes)).isoformat(timespec="seconds")
        self._describe()  # finds the instance by its tag, or says it cannot
        self._tag(f"hold {self._target()} for maintenance", {MAINTENANCE_TAG: f"{who} {end}"})
        return live_holders(self._describe(), utc_now())  # read after the tag: a start before it shows

    def end_maintenance(self) -> None:
        """End maintenance: the starts that wait for it go on."""
        self._describe()
        self._untag(MAINTENANCE_TAG)

    def wait_out_maintenance(self) -> None:
        """Return once the instance is under no maintenance; while it is, say so and wait (to its
        end, or to an earlier `--end`; a maintenance begun again for longer is waited out too)."""
        while (held := maintenance_of(self._describe(), utc_now())) is not None:
            who, until = held
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
