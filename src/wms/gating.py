"""The gate stage: the candidate's ONNX export checked against its weights, then both models scored.

The baseline is the version main names in `models/production_current.json` (what serves, or
is about to once the release workflow reconciles), falling back to the registry's
`production` alias in a project that has no pointer file yet. Both models are scored through
the ONNX export the service runs, on ONNX Runtime (CPU), on the same test images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wms.config import Project
from wms.data.splits import split_pairs
from wms.errors import GateError, ModelNotFound, RegistryError, WmsError
from wms.gate import REPORT_MD, GateDecision, decide, write_report
from wms.parity import check_onnx_parity
from wms.production import CURRENT_FILE, HISTORY_FILE, check_same_model, missing_version, parse_history
from wms.registry import Registry
from wms.runs import PipelineRun, TrainedRun
from wms.scores import ImageScore, evaluate_onnx
from wms.train.spec import ONNX_FILE
from wms.vcs.mainline import MainLine


def main_history(main: MainLine) -> list[dict[str, Any]]:
    """Main's ledger of moves; empty where it is missing or cannot be read (it only picks advice)."""
    ledger = main.project.path(main.project.settings.tracking.pointer_dir) / HISTORY_FILE
    try:
        return parse_history(main.read_text(ledger) or "", ledger)
    except RegistryError:
        return []


def production_per_main(project: Project, registry: Registry) -> str | None:
    """The version in production as main says, else as the registry's alias says; None before the first."""
    pointer, damaged = None, False
    main = MainLine(project)
    try:
        pointer = main.production_pointer()
    except RegistryError:
        damaged = True  # reconcile says so; the alias still names what serves
    if pointer is not None:
        named = str(pointer["to_version"])
        try:
            registered = registry.get(named)
        except ModelNotFound:
            # Not a baseline that fails to score: the candidate, registered now, would take the
            # number main's production had (MLflow numbers on from what it holds).
            where = f"{CURRENT_FILE} on main ({main.where})"
            raise GateError(missing_version(where, named, registry, main_history(main))) from None
        check_same_model(f"{CURRENT_FILE} on main ({main.where})", pointer, registered)
        return named
    alias = registry.production()
    if alias is None and damaged:  # not "nothing in production": the floor alone must not judge
        raise GateError(
            f"main's {CURRENT_FILE} cannot be read and no version is aliased production, so the gate "
            "has no baseline to compare with; restore the file on main"
        )
    return alias.version if alias else None


def gate_candidate(
    project: Project, registry: Registry, run: PipelineRun, dataset: Path, trained: TrainedRun
) -> GateDecision:
    """Score both models' ONNX exports on the same test images, decide, report, register the candidate.

    The candidate's export is first checked against its torch weights; one that disagrees
    raises GateError before anything is registered.
    """
    gate = project.settings.gate
    test_pairs = split_pairs(project, dataset)["test"]
    with registry.fetched(trained.run_id) as folder:
        check_onnx_parity(folder, test_pairs, gate.onnx_min_agreement)
        scores = evaluate_onnx(folder, test_pairs)
    production = production_per_main(project, registry)
    baseline: list[ImageScore] | None = None
    error = None
    if production is not None:
        try:
            with registry.fetched(production) as folder:
                if not (folder / ONNX_FILE).is_file():
                    raise GateError(
                        f"it has no {ONNX_FILE} (trained with train.export_onnx = false?), and the gate "
                        "scores the ONNX export the service runs"
                    )
                baseline = evaluate_onnx(folder, test_pairs)
        except Exception as exc:  # any way the old model fails to load or run on today's data
            error = str(exc) if isinstance(exc, WmsError) else f"{type(exc).__name__}: {exc}"
    decision = decide(
        gate,
        scores,
        baseline,
        production,
        baseline_error=error,
    )
    report_dir = run.run_dir / "gate"
    write_report(decision, report_dir)
    registry.log_to_run(
        trained.run_id, report_dir, "gate", {"wms.gate": "pass" if decision.promote else "fail"}
    )
    candidate = registry.register(
        trained.run_id,
        tags={
            "gate": "pass" if decision.promote else "fail",
            "gate_reason": decision.reason[:4000],
            "pipeline_run": run.run_id,
        },
    )
    run.outputs["gate"] = {k: v for k, v in decision.to_dict().items() if k != "per_image"}
    run.outputs["gate_report"] = str(report_dir / REPORT_MD)
    run.outputs["candidate_version"] = candidate.version
    if decision.promote:
        run.summary = "promoted"
    else:
        kept = f"production stays version {production}" if production else "nothing in production"
        run.summary = (
            f"not promoted: {decision.reason}; {kept} "
            f"(candidate registered as version {candidate.version} for review); " + left_out(project, run)
        )
    return decision


def left_out(project: Project, run: PipelineRun) -> str:
    """What a batch that is not promoted leaves out of main's dataset, and how a person takes it in.

    Main's `data/dataset.json` moves only with a promotion, and every later batch merges onto
    it: the batch's pairs are stored (in the run's version) but nothing trains on them again.
    """
    version = run.outputs.get("dataset_version") or "VERSION"
    new = run.outputs.get("new_pairs")
    pairs = f"{new} new pair(s)" if new is not None else "new pairs"
    ingest = "wms data ingest DIR"
    if run.outputs.get("corrected"):
        pairs += f" and {len(run.outputs['corrected'])} corrected mask(s)"
        ingest += " --correct-masks"  # without it the ingest refuses a stored photo with another mask
    pointer = project.settings.data.pointer.as_posix()
    return (
        f"its {pairs} stay out of main's dataset, so later batches train without them; to take them "
        f"in anyway, on main: `wms data pull {version} DIR && {ingest}`, then commit and push {pointer}"
    )
