"""Parallel VAE decode across all ranks, on diffusers' AutoencoderKLWan (Wan2.1 / Wan2.2 VAE).

The latent is cut into contiguous strips along its longer spatial axis (odd sizes split
unevenly, e.g. 5 rows on 2 ranks -> 3 + 2). Two modes:

- `tiles`: each rank decodes its strip plus a halo of latent rows on its own (no traffic during
  decode), the decoded strips are gathered and blended with complementary linear ramps over
  the overlaps. An approximation: the decoder's receptive field is wider than any halo and its
  mid block has a global attention, so the seams differ slightly (measure it with PSNR).
- `exact`: each rank decodes only its strip, but every convolution first pulls from its
  neighbours exactly as many rows as the kernel reaches (zeros at the global border, which is
  what the convolution's own zero padding gives), and the global attention block gathers the
  whole frame, attends, and keeps its own rows. Equal to the single-device decode up to float
  summation order. Nearest-neighbour x2 upsampling, RMS norm over channels, the causal time
  convolutions and unpatchify are row-local, so they need nothing.

Every rank ends with the full decoded video (all-gather), so rank 0 can write it.
"""
from __future__ import annotations

import contextlib
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

from phyx.errors import UnsupportedArgumentError
from phyx.pipelines import _dist

MODES = ("none", "tiles", "exact")


def split_sizes(n: int, parts: int) -> list[int]:
    """Balanced contiguous split: the first n % parts parts get one more."""
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def split_axis(z: torch.Tensor) -> int:
    """The latent dim to split: the longer of H (3) and W (4) of [B, C, T, H, W]."""
    return 4 if z.shape[4] > z.shape[3] else 3


def decode_single(vae, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vae.decode(z, return_dict=False)[0]


def decode(vae, z: torch.Tensor, mode: str = "exact", halo: int = 2) -> tuple[torch.Tensor, dict]:
    """Decode latent z [B, C, T, H, W] (already denormalised) across all ranks.
    Returns (video [B, 3, F, H*s, W*s] on every rank, info)."""
    if mode not in MODES:
        raise ValueError(f"unknown VAE decode mode {mode!r}; choose one of {MODES}")
    world = _dist.world_size()
    axis = split_axis(z)
    info = {"mode": mode, "ranks": world, "split_axis": "W" if axis == 4 else "H"}
    if mode == "none" or world == 1:
        info["mode"] = "single" if world == 1 else "replicated"
        return decode_single(vae, z), info
    if z.shape[axis] < world:
        # fewer latent rows than ranks: a strip would be empty; every rank decodes all of it
        info["mode"] = "replicated"
        info["why"] = f"latent {info['split_axis']}={z.shape[axis]} < {world} ranks"
        return decode_single(vae, z), info
    sizes = split_sizes(z.shape[axis], world)
    info["strips"] = sizes
    if mode == "tiles":
        info["halo_latent"] = halo
        return _decode_tiles(vae, z, axis, sizes, halo), info
    return _decode_exact(vae, z, axis, sizes), info


# ---------------------------------------------------------------------------------- tiles

def _feather_weights(start: int, stop: int, lo_overlap: int, hi_overlap: int) -> torch.Tensor:
    """1-D weights for a tile covering [start, stop) px: linear ramp up over its first
    lo_overlap px, down over its last hi_overlap px. Neighbouring ramps over the same overlap
    sum to 1, so the blend is a partition of unity."""
    y = torch.arange(start, stop, dtype=torch.float64) + 0.5
    w = torch.ones(stop - start, dtype=torch.float64)
    if lo_overlap > 0:
        w = w * ((y - start) / lo_overlap).clamp(0, 1)
    if hi_overlap > 0:
        w = w * ((stop - y) / hi_overlap).clamp(0, 1)
    return w


def _decode_tiles(vae, z, axis, sizes, halo):
    world, r = len(sizes), _dist.rank()
    starts = [sum(sizes[:i]) for i in range(world)]
    n = z.shape[axis]
    spans = [(max(0, a - halo), min(n, a + s + halo)) for a, s in zip(starts, sizes)]
    ta, tb = spans[r]
    tile = decode_single(vae, z.narrow(axis, ta, tb - ta))
    scale = tile.shape[axis] // (tb - ta)  # pixels per latent row (8 or 16)
    gathered, _ = _dist.all_gather_uneven(tile.float(), dim=axis)
    out_shape = list(gathered.shape)
    out_shape[axis] = n * scale
    acc = gathered.new_zeros(out_shape)
    wsum = torch.zeros(n * scale, dtype=torch.float64)
    offset = 0
    for i, (a, b) in enumerate(spans):
        lo = (spans[i - 1][1] - a) * scale if i > 0 else 0       # overlap with the previous tile
        hi = (b - spans[i + 1][0]) * scale if i + 1 < world else 0  # with the next
        w = _feather_weights(a * scale, b * scale, lo, hi)
        part = gathered.narrow(axis, offset, (b - a) * scale)
        offset += (b - a) * scale
        view = [1] * part.dim()
        view[axis] = -1
        acc.narrow(axis, a * scale, (b - a) * scale).add_(part * w.to(part.dtype).view(view))
        wsum[a * scale:b * scale] += w
    view = [1] * acc.dim()
    view[axis] = -1
    return (acc / wsum.to(acc.dtype).view(view)).to(tile.dtype)


# ---------------------------------------------------------------------------------- exact

def _halo(x: torch.Tensor, dim: int, p: int) -> torch.Tensor:
    """x with p rows of each neighbour's edge added on both sides along dim (zeros at the
    global border). One all-gather of every rank's [first p | last p] rows."""
    if x.shape[dim] < p:
        raise UnsupportedArgumentError(f"exact parallel decode needs at least {p} rows per rank "
                                       f"along the split axis, this rank has {x.shape[dim]}; "
                                       f"use fewer ranks or --vae-parallel tiles")
    n = x.shape[dim]
    edges = torch.cat([x.narrow(dim, 0, p), x.narrow(dim, n - p, p)], dim=dim)
    g = _dist.all_gather_stack(edges)
    r, world = _dist.rank(), g.shape[0]
    zeros = torch.zeros_like(x.narrow(dim, 0, p))
    above = g[r - 1].narrow(dim, p, p) if r > 0 else zeros
    below = g[r + 1].narrow(dim, 0, p) if r + 1 < world else zeros
    return torch.cat([above, x, below], dim=dim)


def _causal_conv3d_forward(axis):
    # WanCausalConv3d keeps its padding in _padding = (W, W, H, H, 2*T, 0) for F.pad
    pidx = 2 if axis == 3 else 0

    def forward(self, x, cache_x=None):
        padding = list(self._padding)
        if cache_x is not None and self._padding[4] > 0:
            x = torch.cat([cache_x.to(x.device), x], dim=2)
            padding[4] -= cache_x.shape[2]
        p = padding[pidx]
        if p:
            x = _halo(x, axis, p)
            padding[pidx] = padding[pidx + 1] = 0
        return nn.Conv3d.forward(self, F.pad(x, padding))
    return forward


def _conv2d_forward(axis):
    # nn.Conv2d on [B*T, C, H, W]: the split axis is 2 (H) or 3 (W)
    d2, pidx = (2, 0) if axis == 3 else (3, 1)

    def forward(self, x):
        p = self.padding[pidx]
        pad = list(self.padding)
        if p:
            x = _halo(x, d2, p)
            pad[pidx] = 0
        return F.conv2d(x, self.weight, self.bias, self.stride, tuple(pad), self.dilation, self.groups)
    return forward


def _attention_forward(axis, original):
    def forward(self, x):
        full, sizes = _dist.all_gather_uneven(x, dim=axis)
        r = _dist.rank()
        return original(full).narrow(axis, sum(sizes[:r]), sizes[r])
    return forward


@contextlib.contextmanager
def _exact_patched(decoder: nn.Module, axis: int):
    """Swap the forward of each spatially non-local decoder module for its halo / gather
    version (instance attributes only; restored on exit)."""
    from diffusers.models.autoencoders import autoencoder_kl_wan as wan_vae

    patched = []
    for name, m in decoder.named_modules():
        if isinstance(m, wan_vae.WanCausalConv3d):
            if m.stride[axis - 2] != 1:
                raise UnsupportedArgumentError(f"exact decode: strided conv {name} is not supported")
            fwd = _causal_conv3d_forward(axis)
        elif isinstance(m, nn.Conv2d):
            if m.stride[axis - 3] != 1 or m.padding_mode != "zeros":
                raise UnsupportedArgumentError(f"exact decode: conv {name} (stride {m.stride}, "
                                               f"{m.padding_mode} padding) is not supported")
            fwd = _conv2d_forward(axis)
        elif isinstance(m, wan_vae.WanAttentionBlock):
            fwd = _attention_forward(axis, m.forward)
        elif isinstance(m, (nn.Conv1d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)) or \
                "attention" in type(m).__name__.lower():
            raise UnsupportedArgumentError(
                f"exact parallel decode does not know how to split {type(m).__name__} ({name}); "
                f"use --vae-parallel tiles for this VAE")
        else:
            continue
        m.forward = types.MethodType(fwd, m)
        patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def _decode_exact(vae, z, axis, sizes):
    r = _dist.rank()
    local = z.narrow(axis, sum(sizes[:r]), sizes[r])
    with _exact_patched(vae.decoder, axis):
        out = decode_single(vae, local)
    full, _ = _dist.all_gather_uneven(out, dim=axis)
    return full
