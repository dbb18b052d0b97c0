"""LingBot-World camera control: from intrinsics.npy / poses.npy to the DiT's camera embedding,
step for step as upstream prepares it (wan/image2video.py + wan/utils/cam_utils.py):

1. poses capped to 4k+1 frames (and to frame_num); frame_num becomes that count;
2. only the first intrinsics row is used, rescaled from the 480x832 it was calibrated for to the
   target (height, width) (no crop), and repeated for every latent frame;
3. poses interpolated onto the latent frames linspace(0, N-1, (N-1)//4 + 1): translation linear
   (scipy interp1d), rotation by slerp (scipy Slerp), in float64;
4. made relative to the first frame, then frame-to-frame, translation divided by its largest
   norm (float32, as upstream);
5. one ray per pixel at pixel centres (+0.5): [ray origin, unit ray direction] = 6 channels
   (not Plücker moments; upstream comments out the cross product);
6. folded 8x8 pixels into each latent pixel: 6*8*8 = 384 channels, [1, 384, lat_f, lat_h, lat_w].

scipy is not needed: its linear interpolation and Slerp are re-implemented in numpy with the
same index and composition rules (tests compare against scipy when it is installed).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from phyx.errors import LayoutError
from phyx.io import untrusted as U

CALIBRATION_SIZE = (480, 832)   # (height, width) the example intrinsics were given for
RAY_CHANNELS = 6


class CameraInputError(LayoutError):
    """A camera file or array that cannot describe a camera trajectory."""


# ---- validation and loading ------------------------------------------------------------------
MAX_CAMERA_FRAMES = 100_000     # poses / intrinsics rows a camera file may hold


def _real_array(A, name: str) -> np.ndarray:
    """A real-valued numeric array (integers or floats); anything else is refused by name."""
    try:
        A = np.asarray(A)
    except (TypeError, ValueError) as e:
        raise CameraInputError(f"{name} is not a numeric array ({str(e)[:120]})") from None
    if A.dtype.kind not in "iuf":
        what = {"c": "complex", "b": "boolean", "U": "string", "S": "bytes", "O": "object",
                "V": "structured", "M": "datetime", "m": "timedelta"}.get(A.dtype.kind, str(A.dtype))
        raise CameraInputError(f"{name} holds {what} values ({A.dtype}); camera files hold real "
                               f"numbers (float32 / float64)")
    if A.ndim >= 1 and A.shape[0] > MAX_CAMERA_FRAMES:
        raise CameraInputError(f"{name} has {A.shape[0]} rows, over the cap of {MAX_CAMERA_FRAMES}")
    return A


def validate_intrinsics(K: np.ndarray, name: str = "intrinsics") -> np.ndarray:
    K = _real_array(K, name)
    if K.ndim != 2 or K.shape[1] != 4 or K.shape[0] < 1:
        raise CameraInputError(f"{name} must be [N, 4] rows of (fx, fy, cx, cy); got shape {K.shape}")
    if not np.isfinite(K).all():
        raise CameraInputError(f"{name} contains NaN or Inf (first bad row "
                               f"{int(np.argwhere(~np.isfinite(K))[0][0])})")
    if (K[:, :2] <= 0).any():
        raise CameraInputError(f"{name}: focal lengths fx, fy must be positive")
    return K


def validate_poses(P: np.ndarray, name: str = "poses", tol: float = 1e-3) -> np.ndarray:
    """Camera-to-world [N, 4, 4] rigid transforms (rotation orthonormal with det +1, last row 0 0 0 1)."""
    P = _real_array(P, name)
    if P.ndim != 3 or P.shape[1:] != (4, 4) or P.shape[0] < 1:
        raise CameraInputError(f"{name} must be [N, 4, 4] camera-to-world matrices; got shape {P.shape}")
    if not np.isfinite(P).all():
        raise CameraInputError(f"{name} contains NaN or Inf (first bad frame "
                               f"{int(np.argwhere(~np.isfinite(P))[0][0])})")
    P64 = P.astype(np.float64)
    bottom = np.abs(P64[:, 3] - np.array([0, 0, 0, 1.0])).max(axis=1)
    R = P64[:, :3, :3]
    ortho = np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(R)
    bad = np.nonzero((bottom > tol) | (ortho > tol) | (det <= 0))[0]
    if bad.size:
        i = int(bad[0])
        raise CameraInputError(
            f"{name}: frame {i} is not a rigid camera-to-world transform (|R R^T - I| = {ortho[i]:.2e}, "
            f"det R = {det[i]:.3f}, last row {P64[i, 3].tolist()}); {bad.size} frame(s) fail. Poses must be "
            f"rotation + translation (OpenCV convention), without scale or shear.")
    return P


def _load_npy(path: Path) -> np.ndarray:
    """A plain numeric .npy inside its camera directory: a regular file (no FIFO, device or
    symlink out of the directory), at most NPY_MAX_BYTES, never unpickled, parsed from memory so a
    header claiming more data than the file holds cannot allocate it."""
    import io

    if not os.path.lexists(path):
        raise CameraInputError(f"camera file {path} not found")
    U.file_in_dir(path.parent, path.name, "camera file", CameraInputError)
    data = U.read_bytes(path, "camera file", U.NPY_MAX_BYTES, CameraInputError)
    try:
        f = io.BytesIO(data)
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)          # the header only: no data, nothing unpickled
        if dtype.hasobject:
            raise ValueError("object arrays need pickle")
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if need != len(data) - f.tell():
            raise ValueError(f"its header declares {shape} {dtype} ({need} bytes) but "
                             f"{len(data) - f.tell()} bytes follow")
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # numpy's header parser raises many kinds (tokenize, ValueError, ...)
        raise CameraInputError(f"{path} is not a plain numeric .npy array ({str(e)[:160]}); pickled "
                               f"arrays are not loaded") from None


def load_camera_dir(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(intrinsics [N, 4], poses [N, 4, 4]) from a LingBot-World example/action directory."""
    path = Path(path)
    if not path.is_dir():
        raise CameraInputError(f"camera directory {path} not found (it holds intrinsics.npy and "
                               f"poses.npy)")
    K = validate_intrinsics(_load_npy(path / "intrinsics.npy"), str(path / "intrinsics.npy"))
    P = validate_poses(_load_npy(path / "poses.npy"), str(path / "poses.npy"))
    return K, P


# ---- rotations (scipy.spatial.transform conventions, quaternions x y z w) ----------------------
def nearest_rotation(R: np.ndarray) -> np.ndarray:
    """The closest rotation matrix (SVD, det +1): what scipy >= 1.15's from_matrix projects a
    slightly non-orthogonal (float32-rounded) matrix onto before converting it."""
    U, _, Vt = np.linalg.svd(np.asarray(R, dtype=np.float64))
    d = np.sign(np.linalg.det(U @ Vt))
    U[..., :, 2] *= d[..., None]
    return U @ Vt


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] -> unit quaternions [..., 4] (scipy's from_matrix method:
    project onto the nearest rotation, then Markley's largest-component formula)."""
    R = nearest_rotation(R)
    flat = R.reshape(-1, 3, 3)
    q = np.empty((flat.shape[0], 4))
    for n, m in enumerate(flat):
        dec = np.array([m[0, 0], m[1, 1], m[2, 2], m[0, 0] + m[1, 1] + m[2, 2]])
        c = int(np.argmax(dec))
        if c != 3:
            i, j, k = c, (c + 1) % 3, (c + 2) % 3
            q[n, i] = 1 - dec[3] + 2 * m[i, i]
            q[n, j] = m[j, i] + m[i, j]
            q[n, k] = m[k, i] + m[i, k]
            q[n, 3] = m[k, j] - m[j, k]
        else:
            q[n] = [m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1], 1 + dec[3]]
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return q.reshape(R.shape[:-2] + (4,))


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def quat_mul(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hamilton product: the rotation 'q, then p' (scipy's p * q)."""
    px, py, pz, pw = np.moveaxis(p, -1, 0)
    qx, qy, qz, qw = np.moveaxis(q, -1, 0)
    return np.stack([pw * qx + px * qw + py * qz - pz * qy,
                     pw * qy - px * qz + py * qw + pz * qx,
                     pw * qz + px * qy - py * qx + pz * qw,
                     pw * qw - px * qx - py * qy - pz * qz], -1)


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    q = np.where(q[..., 3:4] < 0, -q, q)             # shortest rotation (angle in [0, pi])
    v, w = q[..., :3], q[..., 3]
    angle = 2 * np.arctan2(np.linalg.norm(v, axis=-1), w)
    small = angle <= 1e-3
    a2 = angle * angle
    scale = np.where(small, 2 + a2 / 12 + 7 * a2 * a2 / 2880,
                     angle / np.sin(np.where(small, 1.0, angle) / 2))
    return scale[..., None] * v


def rotvec_to_quat(r: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(r, axis=-1)
    small = angle <= 1e-3
    a2 = angle * angle
    scale = np.where(small, 0.5 - a2 / 48 + a2 * a2 / 3840,
                     np.sin(angle / 2) / np.where(small, 1.0, angle))
    return np.concatenate([scale[..., None] * r, np.cos(angle / 2)[..., None]], -1)


def slerp_rotations(src_t: np.ndarray, R: np.ndarray, tgt_t: np.ndarray) -> np.ndarray:
    """scipy Slerp(src_t, Rotation.from_matrix(R))(tgt_t).as_matrix(), in numpy float64."""
    src_t, tgt_t = np.asarray(src_t, np.float64), np.asarray(tgt_t, np.float64)
    if src_t.size == 1:
        if np.any(tgt_t != src_t[0]):
            raise CameraInputError("a single pose cannot be interpolated to other times")
        return np.repeat(np.asarray(R, np.float64), tgt_t.size, axis=0)
    if tgt_t.min() < src_t[0] or tgt_t.max() > src_t[-1]:
        raise CameraInputError("slerp target times must lie within the source times")
    q = matrix_to_quat(R)
    inv = q * np.array([-1, -1, -1, 1.0])
    rotvecs = quat_to_rotvec(quat_mul(inv[:-1], q[1:]))
    ind = np.searchsorted(src_t, tgt_t) - 1
    ind[tgt_t == src_t[0]] = 0
    alpha = (tgt_t - src_t[ind]) / np.diff(src_t)[ind]
    return quat_to_matrix(quat_mul(q[ind], rotvec_to_quat(rotvecs[ind] * alpha[:, None])))


def interp_linear(src_t: np.ndarray, y: np.ndarray, tgt_t: np.ndarray) -> np.ndarray:
    """scipy interp1d(src_t, y, axis=0, kind='linear', fill_value='extrapolate')(tgt_t)."""
    src_t, tgt_t, y = (np.asarray(a, np.float64) for a in (src_t, tgt_t, y))
    if src_t.size == 1:
        return np.repeat(y, tgt_t.size, axis=0)
    lo = np.clip(np.searchsorted(src_t, tgt_t) - 1, 0, src_t.size - 2)
    slope = (y[lo + 1] - y[lo]) / (src_t[lo + 1] - src_t[lo])[:, None]
    return slope * (tgt_t - src_t[lo])[:, None] + y[lo]


# ---- trajectory -> camera embedding ---------------------------------------------------------
def capped_frame_num(num_poses: int, frame_num: int) -> int:
    """Upstream keeps ((N - 1) // 4) * 4 + 1 poses, and no more than frame_num."""
    if num_poses < 1:
        raise CameraInputError("the camera trajectory has no poses")
    return min(frame_num, ((num_poses - 1) // 4) * 4 + 1)


def scale_intrinsics(K: np.ndarray, height: int, width: int,
                     calibrated_for: tuple[int, int] = CALIBRATION_SIZE) -> torch.Tensor:
    """First intrinsics row, rescaled from `calibrated_for` (h, w) to (height, width) -> [4] fp32."""
    k = torch.as_tensor(np.asarray(K)[0], dtype=torch.float32)
    sx, sy = width / calibrated_for[1], height / calibrated_for[0]
    return torch.stack([k[0] * sx, k[1] * sy, k[2] * sx, k[3] * sy])


def interpolate_poses(poses: np.ndarray, num_latent: int) -> torch.Tensor:
    """c2w [N, 4, 4] -> [num_latent, 4, 4] fp32 at times linspace(0, N-1, num_latent)."""
    n = poses.shape[0]
    src = np.linspace(0, n - 1, n)
    tgt = np.linspace(0, n - 1, num_latent)
    out = np.zeros((num_latent, 4, 4))
    out[:, :3, :3] = slerp_rotations(src, poses[:, :3, :3], tgt)
    out[:, :3, 3] = interp_linear(src, poses[:, :3, 3], tgt)
    out[:, 3, 3] = 1.0
    return torch.from_numpy(out).float()


def se3_inverse(T: torch.Tensor) -> torch.Tensor:
    R, t = T[:, :3, :3], T[:, :3, 3:]
    out = torch.eye(4, dtype=T.dtype).repeat(T.shape[0], 1, 1)
    out[:, :3, :3] = R.transpose(-1, -2)
    out[:, :3, 3:] = -torch.bmm(R.transpose(-1, -2), t)
    return out


def relative_poses(c2ws: torch.Tensor, framewise: bool = True, normalize_trans: bool = True) -> torch.Tensor:
    """Relative to the first frame, then (framewise) each frame relative to the previous one;
    translations divided by their largest norm when the camera moves."""
    rel = torch.matmul(se3_inverse(c2ws[0:1]), c2ws)
    rel[0] = torch.eye(4, dtype=c2ws.dtype)
    if framewise:
        rel[1:] = torch.bmm(se3_inverse(rel[:-1]), rel[1:])
    if normalize_trans:
        t = rel[:, :3, 3]
        m = torch.norm(t, dim=-1).max()
        if m > 0:
            rel[:, :3, 3] = t / m
    return rel


def ray_embedding(c2ws: torch.Tensor, K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-pixel [origin, unit direction] rays at pixel centres -> [F, height, width, 6]."""
    f = c2ws.shape[0]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=c2ws.dtype), torch.arange(width, dtype=c2ws.dtype),
                            indexing="ij")
    fx, fy, cx, cy = K.to(c2ws.dtype).unbind(-1)
    d = torch.stack([(xs + 0.5 - cx) / fx, (ys + 0.5 - cy) / fy, torch.ones_like(xs)], -1).reshape(-1, 3)
    d = d / d.norm(dim=-1, keepdim=True)
    rays_d = d[None] @ c2ws[:, :3, :3].transpose(-1, -2)           # [F, h*w, 3]
    rays_o = c2ws[:, None, :3, 3].expand_as(rays_d)
    return torch.cat([rays_o, rays_d], -1).view(f, height, width, RAY_CHANNELS)


def fold_to_latent(emb: torch.Tensor, lat_h: int, lat_w: int) -> torch.Tensor:
    """[F, H, W, c] -> [1, c*sh*sw, F, lat_h, lat_w], channel = c*sh*sw + row*sw + col
    ('f (h c1) (w c2) c -> (f h w) (c c1 c2)' then 'b (f h w) c -> b c f h w')."""
    F_, H, W, c = emb.shape
    if H % lat_h or W % lat_w:
        raise CameraInputError(f"pixel size {H}x{W} is not a multiple of the latent size {lat_h}x{lat_w}")
    sh, sw = H // lat_h, W // lat_w
    e = emb.view(F_, lat_h, sh, lat_w, sw, c).permute(5, 2, 4, 0, 1, 3)   # c sh sw F lat_h lat_w
    return e.reshape(1, c * sh * sw, F_, lat_h, lat_w)


@dataclass
class CameraCondition:
    embedding: torch.Tensor      # [1, 384, lat_f, lat_h, lat_w] float32 (cast to the model dtype later)
    frame_num: int               # video frames after capping to the trajectory (4k+1)
    c2ws: torch.Tensor           # [lat_f, 4, 4] relative, framewise, normalised poses
    K: torch.Tensor              # [4] intrinsics used for every frame


def prepare_camera(intrinsics: np.ndarray, poses: np.ndarray, height: int, width: int,
                   frame_num: int = 81, vae_stride: tuple[int, int, int] = (4, 8, 8)) -> CameraCondition:
    """LingBot-World's camera embedding for a video of `frame_num` frames at height x width pixels."""
    K = validate_intrinsics(intrinsics)
    P = validate_poses(poses)
    if height % vae_stride[1] or width % vae_stride[2]:
        raise CameraInputError(f"video size {height}x{width} must be a multiple of the VAE stride "
                               f"{vae_stride[1:]}")
    frame_num = capped_frame_num(P.shape[0], frame_num)
    P = P[:frame_num]
    lat_f = (frame_num - 1) // vae_stride[0] + 1
    c2ws = relative_poses(interpolate_poses(P, (P.shape[0] - 1) // 4 + 1), framewise=True)
    Kt = scale_intrinsics(K, height, width)
    emb = ray_embedding(c2ws, Kt, height, width)
    emb = fold_to_latent(emb, height // vae_stride[1], width // vae_stride[2])
    assert emb.shape[2] == lat_f
    return CameraCondition(emb, frame_num, c2ws, Kt)
