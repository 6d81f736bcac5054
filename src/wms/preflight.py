"""Settings a pipeline stage would fail on, refused before a run is recorded, the store locked or
compute started: found at the train, gate or deploy stage they cost a GPU start, a failed run, or a
model in production that nothing serves."""

from __future__ import annotations

from collections.abc import Collection

from wms.config import Project
from wms.deploy import check_deploy_settings
from wms.errors import ConfigError
from wms.train.run import check_train_settings


def check_pipeline_settings(project: Project, keep: Collection[str], remote_training: bool) -> None:
    """ConfigError (or BackendError: a tool missing) for the settings of a stage still to run:
    [train] (a model the network cannot build, or no ONNX export for the gate to judge) unless
    `keep` has the train stage done, the deploy target where deploy.in_pipeline,
    tracking where training goes to the instance, and a decoder that cannot be confined where
    data.decode_sandbox = required."""
    settings = project.settings
    # Where this run's decodes go: the CLI has set it already; a Pipeline made in code has not.
    from wms.sandbox.images import configure, confined

    configure(settings.data.decode_sandbox)
    if settings.data.decode_sandbox == "required":
        confined()  # ConfigError where this machine cannot confine the decoder, before any work
    if "train" not in keep:
        check_train_settings(settings.train)
        if not settings.train.export_onnx:
            raise ConfigError(
                "train.export_onnx = false, but the gate judges the ONNX export the service runs; set "
                "train.export_onnx = true to run the pipeline"
            )
    if settings.deploy.in_pipeline:
        check_deploy_settings(project)
    if remote_training:
        from wms.remote.entry import check_remote_settings

        check_remote_settings(project, registry_after_stop=True)
