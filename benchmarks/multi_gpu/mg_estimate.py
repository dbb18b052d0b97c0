"""A run's expected wall time from the FLOPs of one step, before any device is touched.

The FLOPs are counted from the config (matmuls and attention of every block; embeddings and
heads are small and left out). The rates are assumptions, not measurements: RATES (TFLOP/s
sustained on one H100, bf16 with flash attention; fp32 with TF32 off), a parallel efficiency of
PAR_EFF, plus fixed costs for process start and model builds. Good to a factor of ~1.5: enough
to plan a lease, never a reported number.
"""
from __future__ import annotations

RATES = {"bf16": 450e12, "fp32": 40e12, "cpu": 2e10}    # sustained FLOP/s per device
PAR_EFF = 0.85
START_S = 35.0          # interpreter + torch + CUDA context + NCCL start, per launch
BUILD_S_PER_GPARAM = 1.0


def step_flops(spec, branch: str) -> float:
    """FLOPs of one step of `spec` (batch 1 for cond; cond + uncond for guided)."""
    fam, c, S = spec.family, spec.cfg, spec.seq_len
    if fam == "wan":
        d, f, L, n = c.dim, c.ffn_dim, spec.text_len, c.num_layers
        per = 8 * S * d * d + 4 * S * S * d + 4 * S * d * d + 4 * L * d * d + 4 * S * L * d + 4 * S * d * f
    elif fam == "cosmos-predict2":
        d, L, n = c.hidden_size, spec.text_len, c.num_layers
        f = int(d * c.mlp_ratio)
        per = (8 * S * d * d + 4 * S * S * d + 4 * S * d * d + 4 * L * c.text_embed_dim * d
               + 4 * S * L * d + 4 * S * d * f)
    else:  # cosmos3: generation tower over S media tokens attending to text + media
        d, f, n = c.hidden_size, c.intermediate_size, c.num_hidden_layers
        qd, kvd, U = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim, spec.text_len
        per = 2 * S * d * (2 * qd + 2 * kvd) + 4 * S * (S + U) * qd + 6 * S * d * f
    return per * n * (2 if branch == "guided" else 1)


def estimate(spec, world: int, modes, *, dtype: str, warmup: int, iters: int, params: float,
             device: str = "cuda", fp32_floor: bool = False) -> dict:
    """Seconds for the reference and each runnable mode, and the total."""
    rate = RATES["cpu"] if device == "cpu" else RATES[dtype]
    t = {b: step_flops(spec, b) / rate for b in ("cond", "guided")}
    steps = warmup + iters
    run_modes = [m for m in modes if m.skip is None]
    need_guided = any(m.guided for m in run_modes) or world == 1
    need_cond = any(not m.guided for m in run_modes) or not need_guided or world == 1
    ref = steps * ((t["cond"] if need_cond else 0) + (t["guided"] if need_guided else 0))
    ref += t["cond"] if need_cond and need_guided else 0          # the noise-floor forward
    if fp32_floor and dtype != "fp32" and device != "cpu":        # one fp32 pass per branch
        ref += sum(step_flops(spec, b) / RATES["fp32"] for b, need in
                   (("cond", need_cond), ("guided", need_guided)) if need)
    per_mode = {m.label: steps * t["guided" if m.guided else "cond"] / (world * PAR_EFF) for m in run_modes}
    builds = (1 + len(run_modes)) * BUILD_S_PER_GPARAM * params / 1e9
    total = START_S + ref + sum(per_mode.values()) + builds
    return {"total_s": total, "reference_s": ref, "modes_s": per_mode, "builds_s": builds,
            "step_s_single_device": t, "assumed_flops_per_s": rate, "assumed_parallel_efficiency": PAR_EFF}


def param_count(spec) -> float:
    """Parameters of the model as configured (meta device: no memory)."""
    from phyx.models.common.meta import on_meta

    m = on_meta(lambda: spec.adapter.construct(spec.cfg))
    return float(sum(p.numel() for p in m.parameters()))
