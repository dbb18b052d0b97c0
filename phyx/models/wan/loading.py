"""Build a WanModel from a checkpoint directory (official or diffusers layout, one file or
sharded with an index, or an A14B pair of experts) and write tiny seeded checkpoints.

Format detection, from the directory alone:
- diffusers: config.json with "_class_name": "WanTransformer3DModel";
- official: config.json with the official fields (dim, num_heads, ...; "_class_name" WanModel);
- A14B / LingBot-World: sub-directories high_noise_model/ + low_noise_model/ (official) or
  transformer/ + transformer_2/ (a diffusers pipeline, first = high-noise expert).
Sizes the official config.json leaves out (patch_size, text_dim, in/out channels, the image
branch, the camera layers) are read from the weight shapes, never guessed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from phyx.errors import CheckpointError, ConfigError
from phyx.io import untrusted as U
from phyx.io.checkpoint import load_state, open_checkpoint, save_safetensors_atomic, write_text_atomic
from phyx.models.wan.config import BOUNDARIES, WanConfig, get_config
from phyx.models.wan.keys import diffusers_to_official, official_to_diffusers
from phyx.models.wan.model import WanModel, keep_fp32
from phyx.models.wan.moe import WanMoE
from phyx.parallel import single_device

DIFFUSERS_CLASS = "WanTransformer3DModel"
MOE_DIRS = (("high_noise_model", "low_noise_model"), ("transformer", "transformer_2"))


def _read_config(path: Path) -> dict | None:
    f = path / "config.json"
    if not os.path.lexists(f):
        return None
    return U.read_json(f, "model config", CheckpointError)


def checkpoint_format(path: Path, _expert: bool = False) -> str | None:
    """'diffusers', 'official', 'moe' or None (not a Wan checkpoint). Expert sub-directories are
    looked at one level deep only (an expert is never itself a pair)."""
    path = Path(path)
    cfg = _read_config(path)
    if cfg is not None:
        if cfg.get("_class_name") == DIFFUSERS_CLASS:
            return "diffusers"
        if "dim" in cfg and "num_heads" in cfg and cfg.get("_class_name", "WanModel") == "WanModel":
            return "official"
        return None
    if _expert:
        return None
    for hi, lo in MOE_DIRS:
        if checkpoint_format(path / hi, True) if (path / hi).is_dir() else None:
            if (path / lo).is_dir() and checkpoint_format(path / lo, True):
                return "moe"
    return None


def detect(path: Path) -> bool:
    try:
        return checkpoint_format(path) is not None
    except CheckpointError:
        return False


# ---- configs ---------------------------------------------------------------------------------
def checked_config(kw: dict, what: str) -> WanConfig:
    """WanConfig from values read from a file: typed, ranged and memory-capped (ConfigError)."""
    return WanConfig.from_dict(kw, what)


_DIFFUSERS_FIELDS = {"num_attention_heads": "int", "attention_head_dim": "int", "in_channels": "int",
                     "out_channels": "int | None", "ffn_dim": "int", "freq_dim": "int", "text_dim": "int",
                     "num_layers": "int", "patch_size": "tuple[int, int, int]", "eps": "float",
                     "image_dim": "int | None", "added_kv_proj_dim": "int | None",
                     "rope_max_seq_len": "int", "cross_attn_norm": "bool", "qk_norm": "str | None",
                     "pos_embed_seq_len": "int | None"}
_OFFICIAL_FIELDS = {"num_heads": "int", "num_layers": "int", "text_len": "int", "eps": "float",
                    "model_type": "str | None"}


def _check_raw(d, fields: dict, what: str) -> None:
    if not isinstance(d, dict):
        raise ConfigError(f"{what}: expected a JSON object")
    for k, ann in fields.items():
        if k in d:
            U.check_value(k, d[k], ann, what, ConfigError)


def config_from_diffusers(d: dict) -> WanConfig:
    _check_raw(d, _DIFFUSERS_FIELDS, "diffusers Wan config")
    heads, hd = d.get("num_attention_heads", 40), d.get("attention_head_dim", 128)
    in_ch = d.get("in_channels", 16)
    if d.get("image_dim") and d.get("added_kv_proj_dim") is None:
        raise CheckpointError("diffusers Wan config has image_dim but no added_kv_proj_dim; "
                              "an image branch needs both")
    if d.get("pos_embed_seq_len"):
        raise CheckpointError("Wan FLF2V (pos_embed_seq_len) is not supported by phyx")
    qk = d.get("qk_norm", "rms_norm_across_heads")
    if qk not in (None, "rms_norm_across_heads"):
        raise CheckpointError(f"unsupported qk_norm {qk!r} (Wan uses 'rms_norm_across_heads')")
    variant = "i2v" if (d.get("image_dim") or in_ch == 36) else "ti2v" if in_ch == 48 else "t2v"
    return checked_config(dict(
        variant=variant, patch_size=tuple(d.get("patch_size", (1, 2, 2))), in_dim=in_ch,
        out_dim=d.get("out_channels") or in_ch, dim=heads * hd, ffn_dim=d.get("ffn_dim", 13824),
        freq_dim=d.get("freq_dim", 256), text_dim=d.get("text_dim", 4096), num_heads=heads,
        num_layers=d.get("num_layers", 40), qk_norm=qk is not None,
        cross_attn_norm=d.get("cross_attn_norm", True), eps=d.get("eps", 1e-6),
        image_dim=d.get("image_dim"), rope_max_len=d.get("rope_max_seq_len", 1024)), "diffusers Wan config")


def config_to_diffusers(cfg: WanConfig) -> dict:
    if cfg.camera_channels is not None:
        raise CheckpointError("diffusers has no LingBot-World camera layers; save it in the official layout")
    return dict(patch_size=list(cfg.patch_size), num_attention_heads=cfg.num_heads,
                attention_head_dim=cfg.head_dim, in_channels=cfg.in_dim, out_channels=cfg.out_dim,
                text_dim=cfg.text_dim, freq_dim=cfg.freq_dim, ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers,
                cross_attn_norm=cfg.cross_attn_norm, qk_norm="rms_norm_across_heads" if cfg.qk_norm else None,
                eps=cfg.eps, image_dim=cfg.image_dim,
                added_kv_proj_dim=cfg.dim if cfg.image_dim is not None else None,
                rope_max_seq_len=cfg.rope_max_len)


def config_from_official(d: dict, reader) -> WanConfig:
    """Official config.json plus the sizes it omits, read from weight shapes."""
    _check_raw(d, _OFFICIAL_FIELDS, "official Wan config")
    ndim = {"patch_embedding.weight": 5, "head.head.weight": 2, "img_emb.proj.1.weight": 2,
            "patch_embedding_wancamctrl.weight": 2, "blocks.0.ffn.0.weight": 2,
            "time_embedding.0.weight": 2, "text_embedding.0.weight": 2}

    def shape(k):
        if k not in reader:
            raise CheckpointError(f"official Wan checkpoint {reader.origin} lacks {k!r}")
        s = reader.shape(k)
        if len(s) != ndim.get(k, len(s)) or not all(s):
            raise CheckpointError(f"official Wan checkpoint {reader.origin}: {k!r} has shape {s}, "
                                  f"expected {ndim.get(k)} non-zero dims")
        return s

    pe = shape("patch_embedding.weight")                 # [dim, in_dim, pt, ph, pw]
    head = shape("head.head.weight")                     # [prod(patch) * out_dim, dim]
    patch = tuple(int(s) for s in pe[2:])
    out_dim = head[0] // (patch[0] * patch[1] * patch[2])
    image_dim = shape("img_emb.proj.1.weight")[1] if "img_emb.proj.1.weight" in reader else None
    cam = None
    if "patch_embedding_wancamctrl.weight" in reader:
        cam = shape("patch_embedding_wancamctrl.weight")[1] // (64 * patch[0] * patch[1] * patch[2])
    mt = d.get("model_type", "t2v")
    variant = mt if mt in ("t2v", "i2v", "ti2v") else "i2v" if pe[1] == 36 else "t2v"
    return checked_config(dict(
        variant=variant, patch_size=patch, text_len=d.get("text_len", 512), in_dim=pe[1],
        dim=pe[0], ffn_dim=shape("blocks.0.ffn.0.weight")[0],
        freq_dim=shape("time_embedding.0.weight")[1], text_dim=shape("text_embedding.0.weight")[1],
        out_dim=out_dim, num_heads=d["num_heads"], num_layers=d.get("num_layers", 32),
        qk_norm="blocks.0.self_attn.norm_q.weight" in reader,
        cross_attn_norm="blocks.0.norm3.weight" in reader, eps=d.get("eps", 1e-6),
        image_dim=image_dim, camera_channels=cam or None), f"official Wan config in {reader.origin}")


# ---- building --------------------------------------------------------------------------------
def build_empty(cfg: WanConfig, dtype=torch.float32, device=None, parallel=None) -> WanModel:
    """A WanModel with uninitialised storage in its final dtype (no fp32 copy of big weights)."""
    from phyx.models.common.meta import materialize, on_meta

    device = torch.device(device) if device is not None else torch.device("cpu")
    model = on_meta(lambda: WanModel(cfg, parallel))
    return materialize(model, device, dtype, keep_fp32=keep_fp32)


def load_wan(path, dtype: torch.dtype = torch.float32, device=None, parallel=None,
             boundary: float | None = None, strict: bool = True):
    """Load the Wan DiT (or A14B expert pair as a WanMoE) in directory `path`."""
    path = Path(path)
    fmt = checkpoint_format(path)
    if fmt is None:
        raise CheckpointError(f"{path} is not a Wan checkpoint directory: expected a config.json "
                              f"(official Wan or diffusers '{DIFFUSERS_CLASS}') or A14B expert "
                              f"sub-directories {MOE_DIRS}")
    if fmt == "moe":
        for hi, lo in MOE_DIRS:
            if (path / hi).is_dir() and (path / lo).is_dir():
                high = load_wan(path / hi, dtype, device, parallel, strict=strict)
                low = load_wan(path / lo, dtype, device, parallel, strict=strict)
                return WanMoE(high, low, boundary if boundary is not None else _default_boundary(path, high.cfg),
                              high.cfg.num_train_timesteps)
    reader = open_checkpoint(path)
    raw = _read_config(path)
    if fmt == "diffusers":
        cfg, rename = config_from_diffusers(raw), diffusers_to_official
    else:
        cfg, rename = config_from_official(raw, reader), None
    reader.check_config_size(cfg.approx_params(), f"Wan config in {path}")
    model = build_empty(cfg, dtype, device, parallel)
    load_state(model, reader, rename=rename, strict=strict)
    return model.eval().requires_grad_(False)


def _default_boundary(path: Path, cfg: WanConfig) -> float:
    idx = path / "model_index.json"
    if os.path.lexists(idx):
        b = U.read_json(idx, "pipeline index", CheckpointError).get("boundary_ratio")
        if b is not None:
            U.check_value("boundary_ratio", b, "float", f"pipeline index {idx}", ConfigError)
            if not 0.0 <= b <= 1.0:
                raise ConfigError(f"pipeline index {idx}: boundary_ratio {b} is not in [0, 1]")
            return float(b)
    if cfg.camera_channels is not None:
        return BOUNDARIES["lingbot-world"]
    return BOUNDARIES["wan2.2-i2v-a14b"] if cfg.variant == "i2v" else BOUNDARIES["wan2.2-t2v-a14b"]


# ---- writing ---------------------------------------------------------------------------------
def save_wan(model: WanModel, directory, fmt: str = "official", max_shard_bytes: int | None = None) -> Path:
    """Write `model` as a checkpoint directory in the official or diffusers layout."""
    from phyx.io.checkpoint import save_sharded

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if fmt == "diffusers":
        conf = {"_class_name": DIFFUSERS_CLASS, **config_to_diffusers(cfg)}
        sd = {official_to_diffusers(k): v for k, v in sd.items()}
        prefix = "diffusion_pytorch_model"
    elif fmt == "official":
        conf = {"_class_name": "WanModel", "model_type": cfg.variant, "dim": cfg.dim, "ffn_dim": cfg.ffn_dim,
                "freq_dim": cfg.freq_dim, "in_dim": cfg.in_dim, "out_dim": cfg.out_dim,
                "num_heads": cfg.num_heads, "num_layers": cfg.num_layers, "text_len": cfg.text_len,
                "eps": cfg.eps}
        if cfg.camera_channels is not None:
            conf["control_type"] = "cam"
        prefix = "model"
    else:
        raise ValueError(f"fmt must be 'official' or 'diffusers', got {fmt!r}")
    if max_shard_bytes is None:
        save_safetensors_atomic(sd, directory / f"{prefix}.safetensors")
    else:
        save_sharded(sd, directory, max_shard_bytes=max_shard_bytes, prefix=prefix)
    write_text_atomic(directory / "config.json", json.dumps(conf, indent=1))
    return directory


TINY_VARIANTS = {"t2v": "tiny-t2v", "i2v": "tiny-i2v", "i2v-clip": "tiny-i2v-clip", "ti2v": "tiny-ti2v",
                 "lingbot": "tiny-lingbot"}


def seeded_model(cfg: WanConfig, seed: int = 0) -> WanModel:
    """A single-device WanModel with seeded weights (phyx.models.common.init: one generator per
    parameter, norm gains near 1), so no part of the network is a no-op in parity tests."""
    from phyx.models.common.init import init_seeded_
    from phyx.models.common.meta import on_meta

    return init_seeded_(on_meta(lambda: WanModel(cfg, single_device())), seed).eval()


def make_tiny_checkpoint(directory, variant: str = "t2v", seed: int = 0, fmt: str = "official",
                         max_shard_bytes: int | None = None) -> Path:
    """Write a tiny seeded Wan checkpoint (real safetensors) for tests and `--model tiny-wan`.
    variant: one of TINY_VARIANTS ('t2v', 'i2v', 'i2v-clip', 'ti2v', 'lingbot')."""
    if variant not in TINY_VARIANTS:
        raise ValueError(f"tiny Wan variant must be one of {sorted(TINY_VARIANTS)}, got {variant!r}")
    return save_wan(seeded_model(get_config(TINY_VARIANTS[variant]), seed), directory, fmt, max_shard_bytes)
