"""Load a Cosmos-Predict2 DiT from a diffusers directory or an official (converted) checkpoint."""
from __future__ import annotations

from pathlib import Path

import torch

from phyx.errors import CheckpointError
from phyx.io.checkpoint import load_state, open_checkpoint
from phyx.models.common.meta import materialize
from phyx.models.cosmos_predict2 import formats
from phyx.models.cosmos_predict2.config import Predict2Config
from phyx.models.cosmos_predict2.model import Predict2DiT


def load(path: str | Path, *, config: Predict2Config | None = None, weights: str = "net",
         dtype: torch.dtype = torch.float32, device=None) -> Predict2DiT:
    """Build the model for `path` and read its weights (strict key check).

    weights: 'net' or 'ema' selects the copy inside an official checkpoint."""
    path = Path(path)
    reader = open_checkpoint(path)   # raises the clear errors (pickle file, missing shard) itself
    fmt = formats.detect(path)
    if fmt is None:
        raise CheckpointError(f"{path} is neither a diffusers CosmosTransformer3DModel directory nor an "
                              f"official Cosmos-Predict2 checkpoint (net./net_ema. MiniTrainDIT keys)")
    if fmt == "diffusers":
        cfg = config or Predict2Config.from_json(path / "config.json")
        rename = None
    else:
        prefix = formats.choose_prefix(reader.keys(), weights)
        cfg = config or formats.infer_official_config(reader, prefix, path)
        rename = formats.official_rename(prefix)
    reader.check_config_size(cfg.approx_params(), f"Cosmos-Predict2 config for {path}")
    with torch.device("meta"):
        model = Predict2DiT(cfg)
    model = materialize(model)
    load_state(model, reader, rename=rename, strict=True)
    model = model.to(dtype=dtype)
    if device is not None:
        model = model.to(device)
    return model.eval()
