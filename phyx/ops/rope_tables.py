"""RoPE table builders. Every table is built on the host in float64 (the NPU has no fast
float64 or complex kernels; upstream Wan builds its tables in complex128) and returned as
angles [S, D/2]; `to_cos_sin` turns them into fp32 cos/sin on the device, which
phyx.ops.rope applies in fp32.

Angle column j of a table pairs with the rotation kernel's pair j: (2j, 2j+1) for style
'adjacent' (Wan) or (j, j + D/2) for style 'half' (Cosmos-Predict2, Cosmos3).
"""
from __future__ import annotations

import math

import torch

_F64 = torch.float64


def axis_angles(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """positions [S] -> angles [S, dim/2] = pos * theta^(-2j/dim), in float64 on the host."""
    if dim % 2:
        raise ValueError(f"RoPE axis dim must be even, got {dim}")
    inv = 1.0 / torch.pow(torch.tensor(theta, dtype=_F64), torch.arange(0, dim, 2, dtype=_F64) / dim)
    return torch.outer(positions.to(device="cpu", dtype=_F64), inv)


def wan_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Wan's split of head_dim over (t, h, w): 128 -> (44, 42, 42)."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def wan_3d(grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0,
           max_len: int = 1024) -> torch.Tensor:
    """Wan2.x 3-D RoPE angles for a (f, h, w) latent-patch grid, flattened f-major: [f*h*w, D/2]."""
    f, h, w = grid
    if max(grid) > max_len:
        raise ValueError(f"grid {grid} exceeds Wan's RoPE table length {max_len}")
    dt, dh, dw = wan_axis_dims(head_dim)
    at = axis_angles(torch.arange(f), dt, theta)
    ah = axis_angles(torch.arange(h), dh, theta)
    aw = axis_angles(torch.arange(w), dw, theta)
    return _grid_concat(at, ah, aw, f, h, w)


def _grid_concat(at, ah, aw, f, h, w):
    return torch.cat([
        at[:, None, None, :].expand(f, h, w, -1),
        ah[None, :, None, :].expand(f, h, w, -1),
        aw[None, None, :, :].expand(f, h, w, -1),
    ], dim=-1).reshape(f * h * w, -1)


def cosmos_predict2_3d(grid: tuple[int, int, int], head_dim: int,
                       extrapolation: tuple[float, float, float] = (1.0, 1.0, 1.0),
                       fps: float | None = None, base_fps: float = 24.0,
                       theta: float = 10000.0) -> torch.Tensor:
    """Cosmos-Predict2 3-D RoPE angles [f*h*w, D/2] with NTK extrapolation ratios per axis
    (t, h, w): theta_axis = theta * ratio ** (dim / (dim - 2)); time positions scaled by
    base_fps / fps when fps is given. Layout (t | h | w) per half, for style 'half'."""
    f, h, w = grid
    dh = dw = head_dim // 6 * 2
    dt = head_dim - dh - dw
    rt, rh, rw = extrapolation
    th_t = theta * rt ** (dt / (dt - 2))
    th_h = theta * rh ** (dh / (dh - 2))
    th_w = theta * rw ** (dw / (dw - 2))
    tpos = torch.arange(f, dtype=_F64)
    if fps is not None:
        tpos = tpos / fps * base_fps
    at = axis_angles(tpos, dt, th_t)
    ah = axis_angles(torch.arange(h), dh, th_h)
    aw = axis_angles(torch.arange(w), dw, th_w)
    return _grid_concat(at, ah, aw, f, h, w)


def to_cos_sin(angles: torch.Tensor, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 host angles -> (cos, sin) in float32 on `device`."""
    if angles.dtype != _F64:
        raise TypeError(f"RoPE angles must be built in float64 on the host, got {angles.dtype}")
    return (torch.cos(angles).to(torch.float32).to(device),
            torch.sin(angles).to(torch.float32).to(device))


# ---------------------------------------------------------------------------------------------
# Cosmos3 (Qwen3-VL style interleaved multi-axis RoPE). Positions are [3, S] (t, h, w) ids,
# built by the two helpers below exactly as diffusers' Cosmos3 pipeline builds them: text ids run
# on all three axes from 0; media ids start after the text plus a temporal margin, with the time
# axis optionally fps-modulated (float positions) and the spatial axes reset to 0 per item.
# ---------------------------------------------------------------------------------------------

COSMOS3_MROPE_SECTIONS = (24, 20, 20)
COSMOS3_ROPE_THETA = 5_000_000.0


def cosmos3_text_positions(num_tokens: int, offset: float = 0.0) -> tuple[torch.Tensor, float]:
    """Text ids [3, n] (the same id on t, h and w) from `offset`; returns (ids, next offset)."""
    ids = torch.arange(num_tokens, dtype=_F64) + offset
    return ids[None].expand(3, -1).clone(), offset + num_tokens


def cosmos3_media_positions(grid: tuple[int, int, int], offset: float, *, fps: float | None = None,
                            base_fps: float = 24.0, temporal_compression: int = 4,
                            base_temporal_compression: int | None = None, start_frame: int = 0,
                            reset_spatial: bool = True) -> tuple[torch.Tensor, float]:
    """Media ids [3, t*h*w] (t-major) for a latent grid (t, h, w) starting at temporal `offset`.

    With fps (and more than one frame) the time id of frame i is
    (i + start_frame) / (fps / tc) * (base_fps / base_tc) + offset: clips at other frame rates land
    on the base-rate time axis. Returns (ids, next offset = ceil(max id) + 1)."""
    t, h, w = grid
    if fps is not None and t > 1:
        tps = fps / temporal_compression
        base_tps = base_fps / (base_temporal_compression or temporal_compression)
        tid = (torch.arange(t, dtype=_F64) + start_frame) / tps * base_tps + offset
    else:
        tid = torch.arange(t, dtype=_F64) + math.floor(offset) + start_frame
    hid = torch.arange(h, dtype=_F64)
    wid = torch.arange(w, dtype=_F64)
    if not reset_spatial:
        hid = hid + math.floor(offset)
        wid = wid + math.floor(offset)
    ids = torch.stack([tid[:, None, None].expand(t, h, w), hid[None, :, None].expand(t, h, w),
                       wid[None, None, :].expand(t, h, w)]).reshape(3, -1)
    return ids, math.ceil(ids.max().item()) + 1


def cosmos3_mrope(positions: torch.Tensor, head_dim: int, theta: float = COSMOS3_ROPE_THETA,
                  sections: tuple[int, int, int] = COSMOS3_MROPE_SECTIONS) -> torch.Tensor:
    """Interleaved mRoPE angles [S, D/2] for ids [3, S] (or [S]: text-only, all axes equal).

    Frequency j uses inv_freq[j] = theta^(-2j/D) times the id of one axis: h for j % 3 == 1 and
    j < 3*sections[1], w for j % 3 == 2 and j < 3*sections[2], t otherwise (Qwen3-VL's
    [THW THW ... TT] layout, which keeps each axis spread over low and high frequencies).
    Pairs with rope style 'half' (cos/sin repeated over both halves)."""
    if positions.dim() == 1:
        positions = positions[None].expand(3, -1)
    if positions.dim() != 2 or positions.shape[0] != 3:
        raise ValueError(f"cosmos3_mrope expects position ids [3, S] or [S], got {tuple(positions.shape)}")
    half = head_dim // 2
    if sum(sections) != half:
        raise ValueError(f"mRoPE sections {tuple(sections)} must add up to head_dim/2 = {half}")
    inv = 1.0 / torch.pow(torch.tensor(theta, dtype=_F64), torch.arange(0, head_dim, 2, dtype=_F64) / head_dim)
    j = torch.arange(half)
    axis = torch.zeros(half, dtype=torch.long)
    axis[(j % 3 == 1) & (j < 3 * sections[1])] = 1
    axis[(j % 3 == 2) & (j < 3 * sections[2])] = 2
    pos = positions.to(device="cpu", dtype=_F64)          # [3, S]
    return pos[axis].T * inv[None, :]                      # [S, half]
