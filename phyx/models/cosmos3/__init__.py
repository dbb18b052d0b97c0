"""Cosmos3 omni: understanding + generation towers (mixture of transformers), mRoPE, media heads."""
from phyx.models.cosmos3.config import NANO, Cosmos3Config
from phyx.models.cosmos3.loading import detect, load
from phyx.models.cosmos3.model import Cosmos3Omni, TextCache
from phyx.models.cosmos3.positions import SequenceLayout, position_ids
from phyx.models.cosmos3.tiny import make_tiny_checkpoint, tiny_config

__all__ = ["Cosmos3Config", "NANO", "Cosmos3Omni", "TextCache", "load", "detect", "SequenceLayout",
           "position_ids", "make_tiny_checkpoint", "tiny_config"]

