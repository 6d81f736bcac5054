"""WMS errors: one root, a few groups; every message says what is wrong and how to fix it.

The CLI turns a `WmsError` into one line and `exit_code`; any other exception is a bug.
"""

from __future__ import annotations


class WmsError(Exception):
    """Root of every error WMS reports to a user."""

    exit_code = 1


class ConfigError(WmsError):
    """A setting is missing or has a value WMS cannot use."""

    exit_code = 2


class UsageError(WmsError):
    """A command was called with arguments that cannot work."""

    exit_code = 2


class DataError(WmsError):
    """A dataset folder, pair or image is missing or unusable."""


class VersionNotFound(DataError):
    """The dataset store holds no version of that id: a name given to a command, a usage error."""

    exit_code = 2


class BatchError(DataError):
    """A batch of new pairs cannot be used as it is (its files, validation, a conflict): push a fixed one.

    The pipeline records only these as the batch's fault (`rejected`); any other error, such as
    a store or a main that names a version the store lacks, leaves the batch to be run again.
    """


class ConflictError(BatchError):
    """New data disagrees with data already in the store."""


class TrainError(WmsError):
    """Training could not run to the end."""


class GateError(WmsError):
    """The quality gate could not reach a decision."""


class RegistryError(WmsError):
    """The model registry has no such model, or could not be reached."""


class ModelNotFound(RegistryError):
    """The registry answered that it has no such model version or alias (it did not fail to answer).

    The name came from the person (an argument, an option, a pointer file): a usage error."""

    exit_code = 2


class ModelPruned(ModelNotFound):
    """`wms model prune` deleted the model's files: resuming or retrying cannot bring them back."""


class BackendError(WmsError):
    """An external system (store, compute, git host, deploy target) failed."""


class MainMoved(BackendError):
    """Main took other pointer changes while a run trained: its promotion, built on the older main,
    would undo them. The batch must run again, on main as it is now."""


class CapacityError(BackendError):
    """EC2 cannot start the instance now (no capacity; a reclaimed spot instance EC2 restarts itself)."""
