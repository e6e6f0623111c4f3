"""Objectives and the fit loop."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .fit import TrainingDivergedError, evaluate_loss, fit
from .history import History

__all__ = ["fit", "evaluate_loss", "History", "TrainingDivergedError", "CheckpointError",
           "load_checkpoint", "save_checkpoint"]
