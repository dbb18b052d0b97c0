"""RoPE table builders. Every table is built on the host in float64 (the NPU has no fast
float64 or complex kernels; upstream Wan builds its tables in complex128) and returned as
angles [S, D/2]; `to_cos_sin` turns them into fp32 cos/sin on the device, which
phyx.ops.rope applies in fp32.

Angle column j of a table pairs with the rotation kernel's pair j: (2j, 2j+1) for style
'adjacent' (Wan) or (j, j + D/2) for style 'half' (Cosmos-Predict2, Cosmos3).
"""
from __future__ import annotations

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
