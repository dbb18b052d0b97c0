"""Cosmos-Predict2 (MiniTrainDIT): model, checkpoint formats, rectified-flow conditioning, loss."""
from phyx.models.cosmos_predict2.config import PRESETS, Predict2Config
from phyx.models.cosmos_predict2.diffusion import (
    denoise,
    guided_x0,
    loss_weight,
    rf_scaling,
    sample_training_sigma,
    training_loss,
)
from phyx.models.cosmos_predict2.loading import load
from phyx.models.cosmos_predict2.model import Predict2DiT
from phyx.models.cosmos_predict2.tiny import make_tiny_checkpoint, tiny_config

__all__ = ["Predict2Config", "PRESETS", "Predict2DiT", "load", "denoise", "guided_x0", "rf_scaling",
           "training_loss", "sample_training_sigma", "loss_weight", "make_tiny_checkpoint", "tiny_config"]


def _register() -> None:
    from pathlib import Path

    from phyx.models import register_family
    from phyx.models.cosmos_predict2.formats import detect

    register_family("cosmos-predict2", lambda p: detect(Path(p)) is not None, load)


_register()
