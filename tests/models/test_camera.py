"""LingBot-World camera preparation: rays by hand for a known pose, upstream's scipy pipeline on
the shipped example trajectories, and clear errors for bad camera files."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from phyx.models.wan import camera as cam

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "lingbot-world-examples"
if not EXAMPLES.is_dir():
    EXAMPLES = Path("/work/shared/data/lingbot-world-examples")
EXAMPLE_DIRS = sorted(p for p in EXAMPLES.glob("[0-9][0-9]") if p.is_dir()) if EXAMPLES.is_dir() else []


def _rot_y(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def _pose(R, t):
    P = np.eye(4)
    P[:3, :3], P[:3, 3] = R, t
    return P


def test_rays_by_hand_for_a_known_pose():
    # 5 poses -> latent frames at times [0, 4]; the camera turns 90 deg about y and moves 2 along x.
    poses = np.stack([_pose(_rot_y(10 * i), [0.5 * i, 0, 0]) for i in range(5)])
    poses[4] = _pose(_rot_y(90), [2.0, 0, 0])
    K = np.array([[416.0, 240.0, 416.0, 240.0]])   # for 480x832 -> at 16x16: fx=fy=8, cx=cy=8
    c = cam.prepare_camera(K, poses, height=16, width=16, frame_num=81)
    assert c.frame_num == 5
    torch.testing.assert_close(c.K, torch.tensor([8.0, 8.0, 8.0, 8.0]))
    emb = c.embedding
    assert emb.shape == (1, 384, 2, 2, 2)

    def expect(frame, row, col):
        d = np.array([(col + 0.5 - 8) / 8, (row + 0.5 - 8) / 8, 1.0])
        d /= np.linalg.norm(d)
        if frame == 0:
            return np.zeros(3), d
        return np.array([1.0, 0, 0]), _rot_y(90) @ d     # translation 2 normalised by its max norm

    for frame, row, col in [(0, 0, 0), (1, 0, 0), (1, 9, 13), (0, 15, 3), (1, 7, 8)]:
        o, d = expect(frame, row, col)
        got = [emb[0, ch * 64 + (row % 8) * 8 + (col % 8), frame, row // 8, col // 8].item() for ch in range(6)]
        np.testing.assert_allclose(got, np.concatenate([o, d]), atol=2e-6)


def test_relative_then_framewise_and_normalised():
    P = torch.from_numpy(np.stack([_pose(_rot_y(30), [1, 2, 3]), _pose(_rot_y(60), [1, 2, 5]),
                                   _pose(_rot_y(60), [1, 2, 9])])).float()
    rel = cam.relative_poses(P)
    torch.testing.assert_close(rel[0], torch.eye(4))
    # frame 1 relative to frame 0: R_y(30), t = R_y(-30) @ (0, 0, 2); frame 2 relative to frame 1:
    # R = I, t = R_y(-60) @ (0, 0, 4); both divided by the largest norm, 4
    t1 = _rot_y(-30) @ np.array([0, 0, 2.0])
    torch.testing.assert_close(rel[1, :3, :3], torch.from_numpy(_rot_y(30)).float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(rel[1, :3, 3], torch.from_numpy(t1 / 4).float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(rel[2, :3, :3], torch.eye(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(rel[2, :3, 3], torch.from_numpy(_rot_y(-60) @ [0, 0, 1.0]).float(), atol=1e-6, rtol=0)
    still = cam.relative_poses(P[:1].repeat(3, 1, 1))   # no motion: no division by zero
    assert torch.isfinite(still).all()


def test_frame_cap_to_4k_plus_1():
    assert cam.capped_frame_num(961, 81) == 81
    assert cam.capped_frame_num(10, 81) == 9
    assert cam.capped_frame_num(4, 81) == 1
    assert cam.capped_frame_num(561, 33) == 33
    with pytest.raises(cam.CameraInputError):
        cam.capped_frame_num(0, 81)


# ---- upstream's own pipeline (scipy), transcribed for comparison ------------------------------
def _upstream_embedding(K, c2ws, h, w, frame_num, lat_h, lat_w):
    from einops import rearrange
    from scipy.interpolate import interp1d
    from scipy.spatial.transform import Rotation, Slerp

    n = ((len(c2ws) - 1) // 4) * 4 + 1
    frame_num = min(frame_num, n)
    c2ws = c2ws[:frame_num]
    Ks = torch.from_numpy(K).float()
    Ks = torch.cat([Ks[:, 0:1] * w / 832, Ks[:, 1:2] * h / 480, Ks[:, 2:3] * w / 832, Ks[:, 3:4] * h / 480], 1)[0]
    N = len(c2ws)
    src, tgt = np.linspace(0, N - 1, N), np.linspace(0, N - 1, (N - 1) // 4 + 1)
    tr = interp1d(src, c2ws[:, :3, 3], axis=0, kind="linear", bounds_error=False, fill_value="extrapolate")(tgt)
    q = Rotation.from_matrix(c2ws[:, :3, :3]).as_quat().copy()
    for i in range(1, len(q)):
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    rm = Slerp(src, Rotation.from_quat(q))(tgt).as_matrix()
    P = np.zeros((len(tgt), 4, 4))
    P[:, :3, :3], P[:, :3, 3], P[:, 3, 3] = rm, tr, 1.0
    P = torch.from_numpy(P).float()

    def inv(T):
        R, t = T[:, :3, :3], T[:, :3, 3:]
        out = torch.eye(4)[None].repeat(T.shape[0], 1, 1)
        out[:, :3, :3] = R.transpose(-1, -2)
        out[:, :3, 3:] = -torch.bmm(R.transpose(-1, -2), t)
        return out

    rel = torch.matmul(inv(P[0:1]), P)
    rel[0] = torch.eye(4)
    rel[1:] = torch.bmm(inv(rel[:-1]), rel[1:])
    m = torch.norm(rel[:, :3, 3], dim=-1).max()
    if m > 0:
        rel[:, :3, 3] = rel[:, :3, 3] / m
    Ks = Ks.repeat(len(rel), 1)
    gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    gxy = (torch.stack([gx, gy], -1).view(-1, 2) + 0.5)[None].repeat(len(rel), 1, 1)
    fx, fy, cx, cy = Ks.chunk(4, dim=-1)
    xs, ys = (gxy[..., 0] - cx) / fx, (gxy[..., 1] - cy) / fy
    d = torch.stack([xs, ys, torch.ones_like(xs)], -1)
    d = d / d.norm(dim=-1, keepdim=True)
    rd = d @ rel[:, :3, :3].transpose(-1, -2)
    ro = rel[:, :3, 3][:, None].expand_as(rd)
    emb = torch.cat([ro, rd], -1).view(len(rel), h, w, 6)
    emb = rearrange(emb, "f (h c1) (w c2) c -> (f h w) (c c1 c2)", c1=h // lat_h, c2=w // lat_w)[None]
    return rearrange(emb, "b (f h w) c -> b c f h w", f=len(rel), h=lat_h, w=lat_w), frame_num


@pytest.mark.skipif(not EXAMPLE_DIRS, reason="LingBot-World example trajectories not found")
@pytest.mark.parametrize("example", [p.name for p in EXAMPLE_DIRS])
def test_examples_match_upstream_pipeline(example):
    pytest.importorskip("scipy")
    K, P = cam.load_camera_dir(EXAMPLES / example)
    for frame_num, (h, w) in [(81, (64, 112)), (17, (48, 48))]:
        ours = cam.prepare_camera(K, P, h, w, frame_num=frame_num)
        ref, ref_frames = _upstream_embedding(K, P, h, w, frame_num, h // 8, w // 8)
        assert ours.frame_num == ref_frames
        assert ours.embedding.shape == ref.shape == (1, 384, (ref_frames - 1) // 4 + 1, h // 8, w // 8)
        err = (ours.embedding - ref).abs().max().item()
        assert err < 1e-5, f"{example}: max abs difference to upstream {err:.2e}"
        # origins of frame 0 are zero, directions unit length, translations at most unit norm
        e = ours.embedding[0].view(6, 64, *ours.embedding.shape[2:])
        assert e[:3, :, 0].abs().max() == 0
        torch.testing.assert_close(e[3:].norm(dim=0), torch.ones_like(e[3]), atol=1e-5, rtol=0)
        assert e[:3].norm(dim=0).max() <= 1 + 1e-6


def test_slerp_and_interp_match_scipy_off_grid():
    scipy_tf = pytest.importorskip("scipy.spatial.transform")
    from scipy.interpolate import interp1d

    rng = np.random.default_rng(0)
    R = scipy_tf.Rotation.random(6, random_state=1).as_matrix()
    src = np.array([0, 1, 2.5, 3, 7, 8.0])
    tgt = np.array([0, 0.3, 1, 2.7, 5.5, 8.0])
    ref = scipy_tf.Slerp(src, scipy_tf.Rotation.from_matrix(R))(tgt).as_matrix()
    np.testing.assert_allclose(cam.slerp_rotations(src, R, tgt), ref, atol=1e-12)
    y = rng.normal(size=(6, 3))
    tgt2 = np.array([-1.0, 0.3, 8.0, 9.5])
    np.testing.assert_allclose(cam.interp_linear(src, y, tgt2),
                               interp1d(src, y, axis=0, fill_value="extrapolate")(tgt2), atol=1e-12)


def _write(d: Path, K, P):
    d.mkdir(parents=True, exist_ok=True)
    np.save(d / "intrinsics.npy", K)
    np.save(d / "poses.npy", P)
    return d


def test_bad_camera_files_are_clear(tmp_path):
    good_P = np.stack([np.eye(4)] * 5)
    good_K = np.array([[500.0, 500.0, 416.0, 240.0]] * 5)
    K, P = cam.load_camera_dir(_write(tmp_path / "ok", good_K, good_P))
    assert K.shape == (5, 4) and P.shape == (5, 4, 4)
    cases = {
        "K-shape": (good_K[:, :3], good_P, r"\[N, 4\]"),
        "P-shape": (good_K, good_P[:, :3], r"\[N, 4, 4\]"),
        "P-nan": (good_K, np.where(np.arange(80).reshape(5, 4, 4) == 37, np.nan, good_P), "NaN"),
        "K-nan": (np.where(np.arange(20).reshape(5, 4) == 6, np.nan, good_K), good_P, "NaN"),
        "scaled": (good_K, good_P * np.array([2.0, 2, 2, 1])[:, None], "not a rigid"),
        "mirror": (good_K, good_P * np.array([-1.0, 1, 1, 1])[:, None], "not a rigid"),
        "bottom": (good_K, good_P + np.pad(np.ones((5, 1, 4)), ((0, 0), (3, 0), (0, 0))) * 0.5, "not a rigid"),
        "focal": (good_K * np.array([0, 1, 1, 1.0]), good_P, "positive"),
    }
    for name, (k, p, msg) in cases.items():
        with pytest.raises(cam.CameraInputError, match=msg):
            cam.load_camera_dir(_write(tmp_path / name, k, p))
    d = tmp_path / "pickled"
    d.mkdir()
    np.save(d / "intrinsics.npy", np.array([{"fx": 1}], dtype=object), allow_pickle=True)
    np.save(d / "poses.npy", good_P)
    with pytest.raises(cam.CameraInputError, match="pickled"):
        cam.load_camera_dir(d)
    with pytest.raises(cam.CameraInputError, match="not found"):
        cam.load_camera_dir(tmp_path / "nowhere")
    with pytest.raises(cam.CameraInputError, match="VAE stride"):
        cam.prepare_camera(good_K, good_P, 20, 16)
