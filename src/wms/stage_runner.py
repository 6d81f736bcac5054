"""How a pipeline run is held while its stages run: the dataset store's lock, renewed by a
heartbeat; SIGINT/SIGTERM turned into an exception; each stage's record saved as it starts and
ends; the batch's outcome written to the store; compute's safety net on every way out; and the
`WMS_FAULT_STAGE` fault injection. `wms.pipeline.Pipeline` says what the stages do.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Protocol

from wms.batches import BatchLedger, is_finished, outcome_of, record_outcome, resume_refusal
from wms.compute import Notify
from wms.compute.hold import ComputeHold
from wms.config import Project
from wms.data.lease import LeaseHeld, default_owner, lease, left_by_dead_process, renew
from wms.data.store import DatasetStore
from wms.errors import BackendError, UsageError, WmsError
from wms.guards import Heartbeat, Interrupted, signals_raise
from wms.preflight import check_pipeline_settings
from wms.runs import InjectedFault, PipelineRun, StageRecord, now_iso
from wms.train.progress import TrainReporter

LOCK_FILE = "pipeline.lock"


class PipelineReporter(Protocol):
    """Shows the run to a person; the CLI prints each stage as it ends."""

    def stage_started(self, stage: StageRecord) -> None: ...
    def stage_done(self, stage: StageRecord) -> None: ...
    def train_reporter(self) -> TrainReporter | None: ...


class StageRunner:
    """Runs a pipeline's stages under the store's lock and records them; a subclass gives `_stages`."""

    project: Project
    reporter: PipelineReporter
    notify: Notify
    fault: tuple[str, str | None] | None
    remote_training: bool
    store: DatasetStore
    batches: BatchLedger
    hold: ComputeHold
    last_run: PipelineRun | None
    lock_lost: bool

    def _stages(self, run: PipelineRun, keep: set[str]) -> None:
        raise NotImplementedError

    def _execute(
        self, run: PipelineRun, keep: set[str], skip_finished: bool = False, resumed: bool = False
    ) -> PipelineRun:
        """Under the store's lock: a batch finished meanwhile is not run again, and a resumed run
        goes on only while its batch is still its own and unfinished (UsageError otherwise)."""
        check_pipeline_settings(self.project, keep, self.remote_training)  # before anything starts
        store_cfg = self.project.settings.store
        path = f"{self.store.root}/{LOCK_FILE}"
        with ExitStack() as stack:
            try:
                lock = stack.enter_context(
                    lease(
                        self.store.fs,
                        path,
                        owner=f"pipeline run {run.run_id} ({default_owner()})",
                        ttl_seconds=store_cfg.lock_ttl_seconds,
                        wait_seconds=store_cfg.lock_wait_seconds,
                        # `wms pipeline resume` takes over the lock its own run's dead process left
                        take_over=lambda holder: left_by_dead_process(holder, f"pipeline run {run.run_id} ("),
                        on_wait=lambda holder: self.notify(
                            f"waiting up to {store_cfg.lock_wait_seconds:g} s for "
                            f"{holder.get('owner', '?')} to finish"
                        ),
                    )
                )
            except LeaseHeld as exc:
                raise BackendError(
                    f"another pipeline is running on the dataset store {self.store.url}: "
                    f"{exc.holder.get('owner', '?')} (its lock expires {exc.holder.get('expires_at', '?')}); "
                    "wait for it to finish and run again, or raise store.lock_wait_seconds to wait longer"
                ) from None
            batch = run.outputs.get("batch")
            if batch:
                record = self.batches.get(batch["sha"])
                if resumed and (refusal := resume_refusal(record, run.run_id)):
                    raise UsageError(refusal)
                if skip_finished and is_finished(record):
                    self.last_run = run
                    return self._already_done(run, record or {})
                self.batches.start(batch["branch"], batch["sha"], run.run_id)
            self.last_run = run
            run.save()
            stack.enter_context(signals_raise(self._on_repeat_signal))
            stack.enter_context(Heartbeat(self._beat_interval(), lambda: self._beat(path, lock), self.notify))
            self._guarded(run, keep)
        return run

    def _guarded(self, run: PipelineRun, keep: set[str]) -> None:
        try:
            self._stages(run, keep)
            run.status = "ok"
        except BaseException as exc:
            record_outcome(self.batches, run, run.fail(exc), self.notify)
            raise
        finally:
            self.hold.safety_net(run)
            for record in run.stages.values():
                if record.status == "pending":
                    record.status = "skipped"
            run.finished_at = now_iso()
            run.save()
        record_outcome(self.batches, run, outcome_of(run), self.notify)

    def _already_done(self, run: PipelineRun, record: dict[str, str]) -> PipelineRun:
        for stage in run.stages.values():
            stage.status = "skipped"
        run.status, run.finished_at = "ok", now_iso()
        run.summary = (
            f"batch {run.outputs['batch']['branch']} was finished meanwhile by run {record.get('run_id')}: "
            f"{record.get('status')} ({record.get('summary', '')})"
        )
        run.save()
        return run

    def _beat_interval(self) -> float:
        settings = self.project.settings
        return min(settings.store.lock_ttl_seconds, settings.compute.lease_minutes * 60) / 3

    def _beat(self, lock_path: str, lock: dict[str, str]) -> None:
        if not renew(self.store.fs, lock_path, lock, self.project.settings.store.lock_ttl_seconds):
            self.lock_lost = True  # the next stage stops the run: two runs must not write at once
            self.notify("WARNING: this run's store lock expired and another writer took it; stopping")
        self.hold.renew()

    def _on_repeat_signal(self, name: str) -> None:
        self.notify(f"{name} again: still releasing compute, please wait (the lease reaper is the backstop)")

    @contextmanager
    def stage(self, run: PipelineRun, name: str, fault_at_entry: bool = True) -> Iterator[StageRecord]:
        record = run.stages[name]
        record.status = "running"
        record.started_at = now_iso()
        self.reporter.stage_started(record)
        run.save()
        started = time.perf_counter()
        try:
            if self.lock_lost and name != "stop_compute":  # compute is given back whatever happened
                raise BackendError(
                    f"this run lost the dataset store's lock (it expired and another writer took it: clocks "
                    f"out of step, or a stall longer than store.lock_ttl_seconds); stopped before {name} so "
                    "that two runs never write at once; run the batch again"
                )
            if fault_at_entry:
                self._maybe_fault(name)
            yield record
            record.status = "ok" if record.status == "running" else record.status
        except BaseException as exc:
            record.status = "failed"
            if isinstance(exc, WmsError | Interrupted):
                record.error = str(exc)
            else:
                record.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            record.seconds = round(time.perf_counter() - started, 2)
            record.finished_at = now_iso()
            run.save()
            self.reporter.stage_done(record)

    def _maybe_fault(self, name: str) -> None:
        if self.fault is None or self.fault[0] != name:
            return
        if self.fault[1] is not None:
            os.kill(os.getpid(), signal.Signals[self.fault[1]])
            time.sleep(5)  # the handler raises as soon as the signal is delivered
        raise InjectedFault(f"fault injected at stage {name} (WMS_FAULT_STAGE); unset it to run normally")
