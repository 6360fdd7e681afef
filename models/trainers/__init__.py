"""Trainers (registered by name) and the run-directory API that evaluation and export consume."""

from models.trainers.registry import get_trainer, list_trainers, register_trainer
from models.trainers.run import TrainedRun, load_run

__all__ = ["TrainedRun", "get_trainer", "list_trainers", "load_run", "register_trainer"]
