"""transformer_engine's RotaryPositionEmbedding and apply_rotary_pos_emb via phyx.ops.rope.

TE's freqs are angles [S, 1, 1, d] whose two halves repeat (rotate-half; 'half' in phyx) or
whose neighbours repeat (interleaved; 'adjacent' in phyx). phyx takes one angle per pair, so
the shim checks that structure and refuses freqs that do not have it."""
from __future__ import annotations

import torch
from torch import nn

from phyx.errors import UnsupportedArgumentError


class RotaryPositionEmbedding(nn.Module):
    def __init__(self, dim, rotary_percent=1.0, seq_len_interpolation_factor=None,
                 pretrained_max_position_embeddings=None, rotary_base=10000.0, interleaved=False):
        super().__init__()
        dim = int(dim * rotary_percent) if rotary_percent < 1.0 else int(dim)
        self.seq_len_interpolation_factor = seq_len_interpolation_factor
        self.pretrained_max_position_embeddings = pretrained_max_position_embeddings
        self.interleaved = interleaved
        self.register_buffer("inv_freq", 1.0 / (rotary_base ** (
            torch.arange(0, dim, 2, dtype=torch.float32) / dim)), persistent=False)

    def forward(self, max_seq_len: int, offset: int = 0):
        seq = torch.arange(max_seq_len, dtype=torch.float32, device=self.inv_freq.device) + offset
        f = self.seq_len_interpolation_factor
        if f is not None:
            p = self.pretrained_max_position_embeddings
            seq = seq * (p / max_seq_len if p is not None and max_seq_len > p * f else 1.0 / f)
        freqs = torch.outer(seq, self.inv_freq)
        if self.interleaved:
            emb = torch.stack((freqs, freqs), dim=-1).reshape(freqs.shape[0], -1)
        else:
            emb = torch.cat((freqs, freqs), dim=-1)
        return emb.reshape(emb.shape[0], 1, 1, emb.shape[1])


def _pair_angles(freqs, interleaved):
    if freqs.dim() != 4 or freqs.shape[1] != 1 or freqs.shape[2] != 1:
        raise UnsupportedArgumentError(
            f"apply_rotary_pos_emb shim expects freqs [S, 1, 1, d], got {tuple(freqs.shape)}")
    f = freqs.reshape(freqs.shape[0], -1).float()
    a, b = (f[:, 0::2], f[:, 1::2]) if interleaved else f.chunk(2, dim=-1)
    if not torch.equal(a, b):
        raise UnsupportedArgumentError(
            "apply_rotary_pos_emb shim: freqs do not repeat per rotation pair (as TE's "
            "RotaryPositionEmbedding builds them), so they are not a rotation phyx.ops.rope can "
            "apply; build them with RotaryPositionEmbedding or pass cos/sin to phyx.ops.rope")
    return a


def apply_rotary_pos_emb(t, freqs, tensor_format="sbhd", interleaved=False, fused=False,
                         cu_seqlens=None, cp_size=1, cp_rank=0, start_positions=None, **unused):
    import phyx.ops

    if cp_size != 1 or start_positions is not None or any(v not in (None, 0) for v in unused.values()):
        raise UnsupportedArgumentError(
            "apply_rotary_pos_emb shim: context-parallel (cp_size/cp_rank), start_positions and "
            f"{sorted(unused)} are not served; slice the positions yourself")
    angles = _pair_angles(freqs, interleaved)      # [S_max, d/2]
    rot = angles.shape[-1] * 2
    style = "adjacent" if interleaved else "half"
    if tensor_format == "thd":
        if cu_seqlens is None:
            raise UnsupportedArgumentError("tensor_format='thd' needs cu_seqlens")
        c = cu_seqlens.tolist()
        pos = torch.cat([torch.arange(b - a) for a, b in zip(c[:-1], c[1:])])
        if int(pos.max()) >= angles.shape[0]:
            raise UnsupportedArgumentError(f"a sequence is longer than freqs ({angles.shape[0]})")
        x = t[None]                                  # [1, T, N, D]
        table = angles[pos.to(angles.device)]
    elif tensor_format in ("bshd", "sbhd"):
        x = t if tensor_format == "bshd" else t.transpose(0, 1)
        if x.shape[1] > angles.shape[0]:
            raise UnsupportedArgumentError(f"sequence length {x.shape[1]} > freqs length {angles.shape[0]}")
        table = angles[: x.shape[1]]
    else:
        raise UnsupportedArgumentError(f"tensor_format must be 'sbhd', 'bshd' or 'thd', got {tensor_format!r}")
    table = table.to(device=t.device, dtype=torch.float32)
    out = phyx.ops.rope(x[..., :rot], table.cos(), table.sin(), style)
    if rot < x.shape[-1]:
        out = torch.cat([out, x[..., rot:]], dim=-1)
    if tensor_format == "thd":
        return out[0]
    return out if tensor_format == "bshd" else out.transpose(0, 1)
