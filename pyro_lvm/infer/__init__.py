"""Objectives and the fit loop."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .fit import TrainingDivergedError, evaluate_loss, fit
from .history import History
from .importance import ImportanceSample, importance_sample
from .iwae import CIWAE, IWAE, MIWAE, PIWAE, Estimator, ImportanceWeightedELBO

__all__ = ["fit", "evaluate_loss", "History", "TrainingDivergedError", "CheckpointError",
           "load_checkpoint", "save_checkpoint", "ImportanceWeightedELBO", "IWAE", "MIWAE",
           "CIWAE", "PIWAE", "Estimator", "ImportanceSample", "importance_sample"]
