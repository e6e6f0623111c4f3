"""Objectives and the fit loop.

The tracking callbacks (``TensorBoardCallback``, ``MLflowCallback``, in
:mod:`pyro_lvm.infer.tracking`) are imported on first use; their packages are optional extras.
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .fit import TrainingDivergedError, TrainingInterrupted, evaluate_loss, fit
from .history import History
from .importance import ImportanceSample, importance_sample
from .iwae import CIWAE, IWAE, MIWAE, PIWAE, Estimator, ImportanceWeightedELBO
from .optimizer import FusedOptimizer
from .particles import always_validate

__all__ = ["fit", "evaluate_loss", "History", "TrainingDivergedError", "TrainingInterrupted",
           "CheckpointError",
           "load_checkpoint", "save_checkpoint", "ImportanceWeightedELBO", "IWAE", "MIWAE",
           "CIWAE", "PIWAE", "Estimator", "ImportanceSample", "importance_sample", "FusedOptimizer",
           "always_validate",
           "TensorBoardCallback", "MLflowCallback"]

_TRACKING = ("TensorBoardCallback", "MLflowCallback")


def __getattr__(name: str):
    if name in _TRACKING:  # PEP 562: tracking.py is imported when one is first asked for
        from . import tracking

        return getattr(tracking, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
