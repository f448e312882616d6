"""Training: data (seeded augmentation, global-batch sampler, collation), the loop, Ray launchers.

The entry point is ``streamparse.pipelines.train.train`` (CLI: ``streamparse train``).
"""

from streamparse.training.data import AugmentedDataset, Batch, Collate, GlobalBatchSampler, TrainAugment
from streamparse.training.build import TrainingError, load_state
from streamparse.training.loop import evaluate_model, run_training
from streamparse.training.steps import LRSchedule, per_image_loss, set_train_mode

__all__ = ["AugmentedDataset", "Batch", "Collate", "GlobalBatchSampler", "TrainAugment", "LRSchedule",
           "TrainingError", "evaluate_model", "load_state", "per_image_loss", "run_training", "set_train_mode"]
