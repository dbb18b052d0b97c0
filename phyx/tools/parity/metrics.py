"""Per-tensor parity metrics, dtype-aware thresholds and a verdict.

All metrics are computed in float64 on the CPU. Positions where both tensors hold the same
non-finite value (e.g. lse = -inf on a fully masked row) count as exact; a position where only
one side is non-finite is a mismatch and always fails (a NaN is never "close").
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"

# Error ratio above which a backend is flagged (WARN) against the baseline backend, when its
# own error is also above a small floor: both sides measured against the same float64 oracle.
RATIO_WARN = 4.0


@dataclass(frozen=True)
class Threshold:
    """Limits for one dtype. rel_l2 and max_abs_norm (max |a-e| / max |e|) are upper bounds,
    cosine a lower bound."""

    rel_l2: float
    max_abs_norm: float
    cosine: float


# Calibrated on the CPU against the float64 oracle: correct kernels measure at most rel_l2
# 7e-7 (fp32), 3.5e-4 (fp16), 2.8e-3 (bf16) on the op cases; the limits leave a 5-15x margin
# and stay tight enough that a planted translation bug (mask not inverted, scale 1.0, tanh GELU
# for exact, bf16 RoPE tables) fails in fp32, the recommended first run on new hardware.
THRESHOLDS: dict[torch.dtype, Threshold] = {
    torch.float64: Threshold(rel_l2=1e-10, max_abs_norm=1e-9, cosine=1 - 1e-12),
    torch.float32: Threshold(rel_l2=1e-5, max_abs_norm=2e-5, cosine=1 - 1e-9),
    torch.float16: Threshold(rel_l2=2e-3, max_abs_norm=4e-3, cosine=1 - 2e-6),
    torch.bfloat16: Threshold(rel_l2=1.5e-2, max_abs_norm=2e-2, cosine=1 - 2e-4),
}


def threshold_for(dtype: torch.dtype, scale: float = 1.0) -> Threshold:
    """The threshold for `dtype`, loosened by `scale` (ops that accumulate many roundings, or
    a measured noise floor, pass scale > 1)."""
    t = THRESHOLDS.get(dtype, THRESHOLDS[torch.float32])
    if scale == 1.0:
        return t
    return Threshold(t.rel_l2 * scale, t.max_abs_norm * scale, 1 - (1 - t.cosine) * scale ** 2)


@dataclass
class Metrics:
    numel: int
    cosine: float
    max_abs: float
    max_abs_norm: float      # max_abs / max |expected| (scale-free)
    rel_l2: float            # ||a - e|| / ||e||
    max_rel: float           # max |a - e| / |e| over elements with |e| > tiny
    within_0p1: float        # share of elements with relative error <= 0.1 %
    within_0p5: float        # share of elements with relative error <= 0.5 %
    nan: int                 # NaN count in the actual tensor
    inf: int                 # Inf count in the actual tensor
    nonfinite_mismatch: int  # positions where exactly one side is non-finite, or they differ
    shape_match: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu", dtype=torch.float64)


def compare(actual: torch.Tensor, expected: torch.Tensor) -> Metrics:
    """Metrics of `actual` against `expected` (the oracle)."""
    if tuple(actual.shape) != tuple(expected.shape):
        return Metrics(actual.numel(), float("nan"), float("inf"), float("inf"), float("inf"),
                       float("inf"), 0.0, 0.0, 0, 0, actual.numel(), shape_match=False)
    a, e = _f64(actual).flatten(), _f64(expected).flatten()
    n = a.numel()
    nan, inf = int(torch.isnan(a).sum()), int(torch.isinf(a).sum())
    fa, fe = torch.isfinite(a), torch.isfinite(e)
    both = fa & fe
    same_nonfinite = (~fa) & (~fe) & ((a == e) | (torch.isnan(a) & torch.isnan(e)))
    mismatch = int(n - both.sum() - same_nonfinite.sum())
    a0 = torch.where(both, a, torch.zeros_like(a))
    e0 = torch.where(both, e, torch.zeros_like(e))
    diff = (a0 - e0).abs()
    e_norm = float(e0.norm())
    d_norm = float(diff.norm())
    if n == 0 or (e_norm == 0.0 and d_norm == 0.0):
        rel_l2, cosine = 0.0, 1.0
    else:
        rel_l2 = d_norm / e_norm if e_norm > 0 else float("inf")
        an = float(a0.norm())
        cosine = float((a0 @ e0) / (an * e_norm)) if an > 0 and e_norm > 0 else 0.0
    max_abs = float(diff.max()) if n else 0.0
    e_max = float(e0.abs().max()) if n else 0.0
    max_abs_norm = max_abs / e_max if e_max > 0 else (0.0 if max_abs == 0 else float("inf"))
    # Relative error per element; elements far below the tensor's scale use the scale instead,
    # so a tiny |e| does not make a meaningless huge ratio.
    floor = max(e_max * 1e-6, torch.finfo(torch.float64).tiny)
    rel = diff / e0.abs().clamp_min(floor)
    if mismatch:
        rel = torch.where(both | same_nonfinite, rel, torch.full_like(rel, float("inf")))
    max_rel = float(rel.max()) if n else 0.0
    within_0p1 = float((rel <= 1e-3).double().mean()) if n else 1.0
    within_0p5 = float((rel <= 5e-3).double().mean()) if n else 1.0
    return Metrics(n, cosine, max_abs, max_abs_norm, rel_l2, max_rel, within_0p1, within_0p5,
                   nan, inf, mismatch)


def verdict(m: Metrics, threshold: Threshold) -> tuple[str, str]:
    """(PASS | FAIL, reason)."""
    if not m.shape_match:
        return FAIL, "shape mismatch"
    if m.nonfinite_mismatch:
        return FAIL, f"{m.nonfinite_mismatch} non-finite mismatches (NaN={m.nan}, Inf={m.inf})"
    bad = []
    if m.rel_l2 > threshold.rel_l2:
        bad.append(f"rel_l2 {m.rel_l2:.2e} > {threshold.rel_l2:.0e}")
    if m.max_abs_norm > threshold.max_abs_norm:
        bad.append(f"max_abs/max|ref| {m.max_abs_norm:.2e} > {threshold.max_abs_norm:.0e}")
    if m.cosine < threshold.cosine:
        bad.append(f"cosine {m.cosine:.8f} < {threshold.cosine:.8f}")
    return (FAIL, "; ".join(bad)) if bad else (PASS, "")


def error_ratio(err_a: float, err_b: float, floor: float = 0.0) -> float:
    """err_a / err_b, both measured against the same float64 oracle. `floor` (e.g. a small
    fraction of the dtype's epsilon) keeps exact results from giving 0/0."""
    num, den = err_a + floor, err_b + floor
    if den == 0:
        return 1.0 if num == 0 else math.inf
    return num / den


def ratio_floor(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps * 1e-2 if dtype.is_floating_point else 0.0


def psnr(actual: torch.Tensor, expected: torch.Tensor, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB (inf when identical)."""
    a, e = _f64(actual), _f64(expected)
    mse = float(((a - e) ** 2).mean())
    if data_range is None:
        data_range = float(e.max() - e.min()) or 1.0
    return math.inf if mse == 0 else 10 * math.log10(data_range ** 2 / mse)


def ssim(actual: torch.Tensor, expected: torch.Tensor, data_range: float | None = None,
         window: int = 7) -> float:
    """Mean structural similarity over the last two dims (uniform window), leading dims
    treated as a batch of images. 1.0 when identical."""
    a, e = _f64(actual), _f64(expected)
    if a.dim() < 2:
        raise ValueError(f"ssim needs at least 2 dims (H, W), got shape {tuple(a.shape)}")
    h, w = a.shape[-2:]
    a = a.reshape(-1, 1, h, w)
    e = e.reshape(-1, 1, h, w)
    if data_range is None:
        data_range = float(e.max() - e.min()) or 1.0
    win = max(1, min(window, h, w))
    pool = torch.nn.functional.avg_pool2d
    mu_a, mu_e = pool(a, win, 1), pool(e, win, 1)
    var_a = pool(a * a, win, 1) - mu_a ** 2
    var_e = pool(e * e, win, 1) - mu_e ** 2
    cov = pool(a * e, win, 1) - mu_a * mu_e
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_e + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_e ** 2 + c1) * (var_a + var_e + c2))
    return float(s.mean())


def drift_metrics(actual: torch.Tensor, expected: torch.Tensor) -> dict:
    """End-to-end drift of a final latent or video: cosine, PSNR, SSIM (reported, not gated
    elementwise: 40-70 bf16 steps never match elementwise)."""
    m = compare(actual, expected)
    return {"cosine": m.cosine, "rel_l2": m.rel_l2, "psnr_db": psnr(actual, expected),
            "ssim": ssim(actual, expected) if actual.dim() >= 2 else float("nan")}
