"""Dataset readers (CIHP, MHPv2), joint augmentations and the synthetic data generator."""

from streamparse.data.cihp import CIHPDataset, DatasetError
from streamparse.data.mhpv2 import MHPv2Dataset
from streamparse.data.synth import generate_dataset, generate_video, render_sample
from streamparse.data.transforms import Compose, RandomFlip, ResizeShortSide, hflip

DATASETS = {"cihp": CIHPDataset, "mhpv2": MHPv2Dataset}

__all__ = ["CIHPDataset", "MHPv2Dataset", "DatasetError", "DATASETS", "generate_dataset", "generate_video",
           "render_sample", "hflip", "RandomFlip", "ResizeShortSide", "Compose"]
