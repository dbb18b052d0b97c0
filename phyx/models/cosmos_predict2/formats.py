"""Checkpoint layouts for Cosmos-Predict2 and their detection.

- diffusers: a directory with config.json (_class_name CosmosTransformer3DModel) and
  diffusion_pytorch_model.safetensors (or sharded with an index). Keys equal our parameter names.
- official (NVIDIA cosmos-predict2, MiniTrainDIT): keys under `net.` (training weights) and/or
  `net_ema.` (EMA weights) after `phyx convert` turned the pickled model.pt into safetensors.
  The config is not stored in those files: it comes from an explicit Predict2Config, the
  safetensors metadata `phyx_config` (written by phyx for its own files), a config.json beside
  the weights, or the released preset matching the width and input channels.
"""
from __future__ import annotations

import re
from pathlib import Path

from phyx.errors import CheckpointError, ConfigError, InputError
from phyx.io import untrusted as U
from phyx.io.checkpoint import open_checkpoint
from phyx.models.cosmos_predict2.config import PRESETS, Predict2Config

DIFFUSERS_CLASS = "CosmosTransformer3DModel"

# official block-level names -> ours (diffusers'), applied to the part after "blocks.{i}."
_BLOCK_RENAMES = [
    ("self_attn.q_proj", "attn1.to_q"), ("self_attn.k_proj", "attn1.to_k"), ("self_attn.v_proj", "attn1.to_v"),
    ("self_attn.output_proj", "attn1.to_out.0"), ("self_attn.q_norm", "attn1.norm_q"),
    ("self_attn.k_norm", "attn1.norm_k"),
    ("cross_attn.q_proj", "attn2.to_q"), ("cross_attn.k_proj", "attn2.to_k"), ("cross_attn.v_proj", "attn2.to_v"),
    ("cross_attn.output_proj", "attn2.to_out.0"), ("cross_attn.q_norm", "attn2.norm_q"),
    ("cross_attn.k_norm", "attn2.norm_k"),
    ("mlp.layer1", "ff.net.0.proj"), ("mlp.layer2", "ff.net.2"),
    ("adaln_modulation_self_attn.1", "norm1.linear_1"), ("adaln_modulation_self_attn.2", "norm1.linear_2"),
    ("adaln_modulation_cross_attn.1", "norm2.linear_1"), ("adaln_modulation_cross_attn.2", "norm2.linear_2"),
    ("adaln_modulation_mlp.1", "norm3.linear_1"), ("adaln_modulation_mlp.2", "norm3.linear_2"),
]
_TOP_RENAMES = [
    ("x_embedder.proj.1", "patch_embed.proj"), ("t_embedder.1.linear_1", "time_embed.t_embedder.linear_1"),
    ("t_embedder.1.linear_2", "time_embed.t_embedder.linear_2"), ("t_embedding_norm", "time_embed.norm"),
    ("final_layer.adaln_modulation.1", "norm_out.linear_1"),
    ("final_layer.adaln_modulation.2", "norm_out.linear_2"), ("final_layer.linear", "proj_out"),
    ("crossattn_proj.0", "crossattn_proj.0"),
]
# training-state buffers and fixed tables the official module keeps; they carry no weights we need
_IGNORED = re.compile(r"^(accum_|pos_embedder\.|logvar\.)|_extra_state$")
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+?)\.(weight|bias)$")


def official_to_ours(key: str) -> str | None:
    """Official MiniTrainDIT key (prefix already stripped) -> our parameter name (None = ignore)."""
    if _IGNORED.search(key):
        return None
    m = _BLOCK.match(key)
    if m:
        i, name, kind = m.groups()
        for a, b in _BLOCK_RENAMES:
            if name == a:
                return f"transformer_blocks.{i}.{b}.{kind}"
        return f"official:{key}"   # unknown: reported as unexpected by the strict loader
    stem, _, kind = key.rpartition(".")
    for a, b in _TOP_RENAMES:
        if stem == a:
            return f"{b}.{kind}"
    return f"official:{key}"


def ours_to_official(key: str) -> str:
    m = re.match(r"^transformer_blocks\.(\d+)\.(.+?)\.(weight|bias)$", key)
    if m:
        i, name, kind = m.groups()
        for a, b in _BLOCK_RENAMES:
            if name == b:
                return f"blocks.{i}.{a}.{kind}"
    stem, _, kind = key.rpartition(".")
    for a, b in _TOP_RENAMES:
        if stem == b:
            return f"{a}.{kind}"
    raise KeyError(f"no official name for {key!r}")


def choose_prefix(keys, weights: str = "net") -> str:
    """Pick which copy of an official checkpoint to load: 'net' (the default, as NVIDIA's own
    inference pipeline does) or 'ema'. A file holding only one copy loads that one for 'net';
    asking for 'ema' when there is none is an error."""
    has_net = any(k.startswith("net.") for k in keys)
    has_ema = any(k.startswith("net_ema.") for k in keys)
    if weights == "ema":
        if not has_ema:
            raise CheckpointError("weights='ema' requested but the checkpoint has no net_ema.* keys")
        return "net_ema."
    if weights != "net":
        raise ValueError(f"weights must be 'net' or 'ema', got {weights!r}")
    if has_net:
        return "net."
    return "net_ema." if has_ema else ""


def official_rename(prefix: str):
    def rename(ck: str) -> str | None:
        if prefix and not ck.startswith(prefix):
            return None   # the other copy (net vs net_ema)
        return official_to_ours(ck[len(prefix):])
    return rename


def detect(path: str | Path) -> str | None:
    """'diffusers', 'official' or None (not a Cosmos-Predict2 checkpoint). The key names decide:
    a directory may carry a diffusers-style config.json beside official (converted) weights."""
    path = Path(path)
    try:
        keys = set(open_checkpoint(path).keys())
    except CheckpointError:
        return None
    probe = ("x_embedder.proj.1.weight", "blocks.0.self_attn.q_proj.weight")
    for pre in ("net.", "net_ema.", ""):
        if all(pre + p in keys for p in probe):
            return "official"
    if path.is_dir() and (path / "config.json").exists() and "patch_embed.proj.weight" in keys:
        try:
            cls = U.read_json(path / "config.json", "model config").get("_class_name")
        except InputError:
            return None
        if cls == DIFFUSERS_CLASS:
            return "diffusers"
    return None


def infer_official_config(reader, prefix: str, path: Path) -> Predict2Config:
    meta = reader.metadata().get("phyx_config")
    if meta:
        return Predict2Config.from_dict(U.loads_json(meta, f"{path}: phyx_config metadata", ConfigError),
                                        f"{path}: phyx_config metadata")
    side = (path if path.is_dir() else path.parent) / "config.json"
    if side.exists():
        d = U.read_json(side, "model config", ConfigError)
        if d.get("_class_name") in (None, DIFFUSERS_CLASS):
            return Predict2Config.from_dict(d)
    w = reader.shape(prefix + "x_embedder.proj.1.weight")
    hidden, patch_in = w[0], w[1] // 4
    in_ch = patch_in - 1
    for name, cfg in PRESETS.items():
        if cfg.hidden_size == hidden and cfg.in_channels == in_ch:
            return Predict2Config.from_dict({**cfg.to_diffusers_dict(), "qk_norm_eps": 1e-6})
    raise CheckpointError(f"cannot tell the Cosmos-Predict2 config of {path}: width {hidden} with {in_ch} "
                          f"input channels matches no released preset ({', '.join(PRESETS)}) and there "
                          f"is no config.json beside it; pass config=Predict2Config(...)")
