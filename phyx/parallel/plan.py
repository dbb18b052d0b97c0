"""Communication plan of a layout, from the shapes alone: bytes each rank sends per DiT layer
(and per denoising step) in each parallel mode, and the HCCL buffer memory the mesh costs.

Counting rules (bytes *sent* by one rank; ring algorithms, the usual lower bound):
- TP all-reduce of n bytes: 2 (t-1)/t n (reduce-scatter + all-gather). Per layer: self-attn out,
  cross-attn out, FFN out (activations [B, S/sp, C]) plus the QK-norm sums of squares
  ([B, S/sp, 1] fp32 for q and k).
- Ulysses all-to-all of a local tensor of n bytes: (u-1)/u n within the ulysses group. Per
  layer: q, k, v and the output ([B, S/sp, heads/t, D]); KV heads that do not divide by ulysses
  are repeated to the query count.
- Ring attention (sp = ulysses x ring): r-1 steps per layer, each sending this rank's K and V
  block ([B, S/r, kv heads/(t u), D] each) to the next rank of the ring.
- CFG: one all-gather of the prediction per step: (c-1) x [B, S, C_out]; SP's final gather of the
  output per step: (s-1)/s x [B, S, C_out].
- HCCL: every communicator takes 2 x HCCL_BUFFSIZE of device memory (send + receive, CANN docs);
  a rank belongs to the world group plus one group per mesh axis of size > 1.
- HCCL point-to-point (isend / irecv / batch_isend_irecv: ring attention's K/V exchange): with
  P2P_HCCL_BUFFSIZE >= 1 (default 20 MB) the NPU's PyTorch plug-in opens separate point-to-point
  communicators, each 2 x P2P_HCCL_BUFFSIZE. Counted per peer: one when ring == 2, two (next and
  previous rank) when ring > 2, an upper bound until measured on hardware (`phyx certify` reports
  the measured figure). P2P_HCCL_BUFFSIZE=0 sends them through the group's own communicator.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from phyx.errors import ParallelConfigError
from phyx.parallel.state import AXES, ParallelConfig

HCCL_BUFFSIZE_DEFAULT_MB = 200.0       # CANN default
P2P_HCCL_BUFFSIZE_DEFAULT_MB = 20.0    # torch_npu default (Ascend Extension for PyTorch 7.1.0+)
SP_ATTENTION = ("ulysses", "ring")   # shorthand: sp_attention="ring" means ring = sp


def env_buffsize_mb(name: str, default: float, minimum: float, environ=None) -> float:
    """An HCCL buffer size from the environment (MB), or a ParallelConfigError naming the fix."""
    env = os.environ if environ is None else environ
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ParallelConfigError(
            f"{name}={raw!r} is not a whole number of MB >= {minimum:g}: set it to an integer such as "
            f"{default:g} (the default), or unset it")
    return float(value)


@dataclass(frozen=True)
class DiTShape:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    layers: int
    seq_len: int
    text_len: int = 512
    out_channels: int = 64      # prediction channels per token (patch volume x latent channels)
    batch: int = 1
    dtype_bytes: int = 2        # bf16


# Transformer shapes of the models phyx targets (tokens: 81 frames, 480p / 720p after patchify).
PRESETS = {
    "wan2.1-1.3b-480p": DiTShape(1536, 12, 12, 128, 8960, 30, 32760, out_channels=64),
    "wan2.2-a14b-720p": DiTShape(5120, 40, 40, 128, 13824, 40, 75600, out_channels=64),
    "cosmos-predict2-2b-720p": DiTShape(2048, 16, 16, 128, 8192, 28, 24 * 44 * 80, out_channels=64),
}


def comm_volume(shape: DiTShape, config: ParallelConfig, sp_attention: str = "ulysses") -> dict:
    """Bytes sent per rank, per layer and per step, for each mode of `config`."""
    config = with_sp_attention(config, sp_attention)
    b, s_len, t, sp, c = shape.dtype_bytes, shape.seq_len, config.tp, config.sp, config.cfg
    s_local = -(-s_len // sp)
    per_layer: dict[str, float] = {}
    if t > 1:
        act = shape.batch * s_local * shape.hidden * b
        norm = shape.batch * s_local * 4 * 2
        per_layer["tp_all_reduce"] = 2 * (t - 1) / t * (3 * act + norm)
    u, r = config.ulysses, config.ring
    hq = shape.heads // t
    hkv = shape.kv_heads // t
    if hkv % u:
        hkv = hq
    if u > 1:
        one = shape.batch * s_local * shape.head_dim * b
        per_layer["sp_all_to_all"] = (u - 1) / u * one * (2 * hq + 2 * hkv)
    if r > 1:
        block = shape.batch * (s_local * u) * (hkv // u) * shape.head_dim * b
        per_layer["ring_kv"] = (r - 1) * 2 * block
    per_step: dict[str, float] = {}
    pred = shape.batch * s_len * shape.out_channels * b
    if c > 1:
        per_step["cfg_all_gather"] = (c - 1) * pred
    if sp > 1:
        per_step["sp_gather_output"] = (sp - 1) / sp * pred
    layer_total = sum(per_layer.values())
    return {"per_layer": per_layer, "per_layer_total": layer_total,
            "per_step": per_step,
            "per_step_total": layer_total * shape.layers + sum(per_step.values())}


def with_sp_attention(config: ParallelConfig, sp_attention: str = "ulysses") -> ParallelConfig:
    """`sp_attention="ring"` is the shorthand for ring attention over the whole SP axis
    (ulysses 1 x ring sp); "ulysses" keeps the config's own split (sp = ulysses x ring)."""
    if sp_attention not in SP_ATTENTION:
        raise ParallelConfigError(f"sp_attention must be one of {SP_ATTENTION}, got {sp_attention!r}")
    if sp_attention == "ring" and config.ring != config.sp:
        return ParallelConfig(cfg=config.cfg, tp=config.tp, ulysses=1, ring=config.sp)
    return config


def ring_p2p_peers(config: ParallelConfig) -> int:
    """Point-to-point peers of one rank under ring attention (0 without it)."""
    if config.ring < 2:
        return 0
    return 1 if config.ring == 2 else 2


def hccl_buffer_cost(config: ParallelConfig, buffsize_mb: float | None = None,
                     extra_groups: int = 0, sp_attention: str = "ulysses",
                     p2p_buffsize_mb: float | None = None) -> dict:
    """Device memory the layout's communicators take under HCCL (per rank)."""
    config = with_sp_attention(config, sp_attention)
    if buffsize_mb is None:
        buffsize_mb = env_buffsize_mb("HCCL_BUFFSIZE", HCCL_BUFFSIZE_DEFAULT_MB, 1)
    if p2p_buffsize_mb is None:
        p2p_buffsize_mb = env_buffsize_mb("P2P_HCCL_BUFFSIZE", P2P_HCCL_BUFFSIZE_DEFAULT_MB, 0)
    axes = [a for a in AXES if getattr(config, a) > 1]
    if config.ulysses > 1 and config.ring > 1:   # USP: a ulysses and a ring group inside sp
        axes += ["ulysses", "ring"]
    groups = (1 if config.world_size > 1 else 0) + len(axes) + extra_groups
    p2p = ring_p2p_peers(config) if p2p_buffsize_mb > 0 else 0
    group_mb, p2p_mb = groups * 2 * buffsize_mb, p2p * 2 * p2p_buffsize_mb
    return {"groups_per_rank": groups, "groups": (["world"] if groups else []) + axes,
            "hccl_buffsize_mb": buffsize_mb, "group_mb": group_mb,
            "p2p_comms_per_rank": p2p, "p2p_hccl_buffsize_mb": p2p_buffsize_mb, "p2p_mb": p2p_mb,
            "mb_per_rank": group_mb + p2p_mb}


def plan(shape: DiTShape, config: ParallelConfig, buffsize_mb: float | None = None,
         sp_attention: str = "ulysses", p2p_buffsize_mb: float | None = None,
         backend: str = "npu") -> dict:
    """The layout's communication volume, and the communicator memory `backend` reserves for it
    (its comm_buffer_cost hook; the vendor need not be present here)."""
    from phyx.backend import backend_class

    config = with_sp_attention(config, sp_attention)
    config.check_heads(shape.heads, shape.kv_heads)
    cost = backend_class(backend).comm_buffer_cost(config, buffsize_mb=buffsize_mb,
                                                   p2p_buffsize_mb=p2p_buffsize_mb)
    return {"config": asdict(config), "shape": asdict(shape), "sp_attention": sp_attention,
            "volume_bytes": comm_volume(shape, config), "hccl": cost}


def _mb(x: float) -> str:
    return f"{x / 2**20:10.2f} MiB"


def format_plan(p: dict) -> str:
    c, v, h = p["config"], p["volume_bytes"], p["hccl"]
    ring = f" (ulysses {c['ulysses']} x ring {c['ring']})" if c.get("ring", 1) > 1 else ""
    lines = [f"layout cfg={c['cfg']} sp={c['sp']}{ring} tp={c['tp']} (world {c['cfg'] * c['sp'] * c['tp']});"
             f" shape {p['shape']}",
             "bytes sent per rank per layer:"]
    for k, x in v["per_layer"].items():
        lines.append(f"  {k:<18}{_mb(x)}")
    lines.append(f"  {'total':<18}{_mb(v['per_layer_total'])}")
    lines.append("bytes sent per rank per step (all layers + once-per-step collectives):")
    for k, x in v["per_step"].items():
        lines.append(f"  {k:<18}{_mb(x)}")
    lines.append(f"  {'total':<18}{_mb(v['per_step_total'])}")
    if "groups_per_rank" in h:
        lines.append(f"HCCL buffers: {h['groups_per_rank']} communicators per rank ({', '.join(h['groups']) or 'none'})"
                     f" x 2 x HCCL_BUFFSIZE {h['hccl_buffsize_mb']:.0f} MB = {h['group_mb']:.0f} MB")
        if h["p2p_comms_per_rank"]:
            lines.append(f"  + ring attention: {h['p2p_comms_per_rank']} point-to-point communicators x 2 x "
                         f"P2P_HCCL_BUFFSIZE {h['p2p_hccl_buffsize_mb']:.0f} MB = {h['p2p_mb']:.0f} MB")
        lines.append(f"  = {h['mb_per_rank']:.0f} MB per rank")
    return "\n".join(lines)
