"""Training HandS3C: typed per-dataset configs with the published schedules (:mod:`.config`),
the loop with resume, AMP and DDP (:mod:`.loop`), atomic snapshots (:mod:`.snapshot`), logs
and curves (:mod:`.logs`).  Command line: ``hands3c train`` (``torchrun ... -m handS3C train``)."""
from .config import PUBLISHED, TrainConfig, config_for, load_config_file
from .loop import DataLoaderWorkerError, NonFiniteLossError, Trainer, train
from .snapshot import list_snapshots, load_newest_valid, read_snapshot, save_snapshot, snapshot_name

__all__ = ["TrainConfig", "PUBLISHED", "config_for", "load_config_file", "Trainer", "train",
           "NonFiniteLossError", "DataLoaderWorkerError", "list_snapshots", "load_newest_valid",
           "read_snapshot", "save_snapshot", "snapshot_name"]
