"""Load Cosmos3 from a diffusers directory (config.json with _class_name Cosmos3OmniTransformer;
keys = ours) or the upstream layout (the same names under a leading `model.`). Under TP each
rank reads only its slices (ColumnParallel/RowParallel parameters carry a ShardSpec)."""
from __future__ import annotations

from pathlib import Path

import torch

from phyx.errors import CheckpointError, InputError
from phyx.io import untrusted as U
from phyx.io.checkpoint import load_state, open_checkpoint
from phyx.models.common.meta import materialize
from phyx.models.cosmos3.config import Cosmos3Config
from phyx.models.cosmos3.model import Cosmos3Omni

DIFFUSERS_CLASS = "Cosmos3OmniTransformer"


def detect(path: str | Path) -> str | None:
    path = Path(path)
    cfg = path / "config.json" if path.is_dir() else None
    if cfg is None or not cfg.exists():
        return None
    try:
        cls = U.read_json(cfg, "model config").get("_class_name")
    except InputError:
        return None
    if cls != DIFFUSERS_CLASS:
        return None
    try:
        keys = open_checkpoint(path).keys()
    except CheckpointError:
        return None
    if "embed_tokens.weight" in keys:
        return "diffusers"
    if "model.embed_tokens.weight" in keys:
        return "upstream"
    return None


def load(path: str | Path, *, config: Cosmos3Config | None = None, dtype: torch.dtype = torch.float32,
         device=None, load_lm_head: bool = True) -> Cosmos3Omni:
    path = Path(path)
    reader = open_checkpoint(path)
    fmt = detect(path)
    if fmt is None:
        raise CheckpointError(f"{path} is not a Cosmos3OmniTransformer directory (config.json with "
                              f"_class_name {DIFFUSERS_CLASS!r} and its safetensors)")
    cfg = config or Cosmos3Config.from_json(path / "config.json")
    reader.check_config_size(cfg.approx_params(), f"Cosmos3 config for {path}")
    with torch.device("meta"):
        model = Cosmos3Omni(cfg)
    model = materialize(model)
    strip = "model." if fmt == "upstream" else ""

    def rename(k: str):
        if strip:
            if k.startswith(strip):
                k = k[len(strip):]
            elif not k.startswith("lm_head."):
                return f"unexpected:{k}"
        return k

    load_state(model, reader, rename=rename, strict=True)
    model = model.to(dtype=dtype)
    model.time_embedder.float()          # kept in fp32 (diffusers' _keep_in_fp32_modules)
    if device is not None:
        model = model.to(device)
    return model.eval()
