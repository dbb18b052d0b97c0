"""Cosmos3 omni behind the FamilyAdapter contract (phyx.models.family).

Its parity / oracle case: one packed sample, 7 text tokens, a 3 x 4 x 6 vision latent in 2x2
patches (18 tokens) whose frame 0 is the clean conditioning frame, timestep 700 (float64 on the
host) on every noisy token; option sound=True adds a 5-step sound stream. No training loss yet.
"""
from __future__ import annotations

from pathlib import Path

import torch

from phyx.models.common.inputs import gen
from phyx.models.common.inputs import to as _to
from phyx.models.family import DiffusersPeer, FamilyAdapterBase, save_diffusers_layout

VISION = (3, 4, 6)        # latent (T, H, W): 2x2 patches -> 3 x 2 x 3 = 18 tokens
TEXT = 7
SOUND = 5
LAYERS = ("proj_in", "time_embedder", "audio_proj_in", "layers.*:und", "layers.*:gen",
          "layers.*.self_attn:und", "layers.*.self_attn:gen", "layers.*.mlp", "layers.*.mlp_moe_gen",
          "norm_moe_gen", "proj_out", "audio_proj_out")


class Cosmos3Adapter(FamilyAdapterBase):
    name = "cosmos3"
    capture_layers = LAYERS
    pipeline = "phyx.pipelines.families.cosmos3"
    LAYERS_FIELD, HEADS_FIELD = "num_hidden_layers", "num_attention_heads"

    def __init__(self):
        from phyx.models.cosmos3.config import NANO, Cosmos3Config
        from phyx.models.cosmos3.tiny import tiny_config

        self.config_class = Cosmos3Config
        self.configs = {"nano": NANO}
        self.tiny_configs = {"tiny": tiny_config()}

    def config_to_dict(self, cfg) -> dict:
        return cfg.to_diffusers_dict()

    # ---- building / checkpoints ------------------------------------------------------------------
    def construct(self, cfg):
        from phyx.models.cosmos3.model import Cosmos3Omni

        return Cosmos3Omni(cfg)           # TP layout from the current parallel state

    def keep_fp32(self, param_name: str) -> bool:
        return param_name.startswith("time_embedder.")   # diffusers' _keep_in_fp32_modules

    def detect(self, path: Path) -> bool:
        from phyx.models.cosmos3.loading import detect

        return detect(Path(path)) is not None

    def load(self, path: Path, **kw):
        from phyx.models.cosmos3.loading import load

        return load(path, **kw)

    def save(self, model, directory, **kw) -> Path:
        return save_diffusers_layout(model, directory)

    # ---- one step ----------------------------------------------------------------------------------
    def make_inputs(self, cfg, seed: int, *, sound: bool = False, **opts) -> dict:
        g = gen(seed)
        T, H, W = VISION
        p = cfg.latent_patch_size
        noisy_tokens = (T - 1) * (H // p) * (W // p)         # frame 0 is the clean conditioning frame
        inp = {"input_ids": torch.randint(0, cfg.vocab_size, (TEXT,), generator=g),
               "vision": torch.randn(cfg.latent_channel, T, H, W, generator=g),
               "vision_noisy_frames": torch.arange(1, T),
               "vision_timesteps": torch.full((noisy_tokens,), 700.0, dtype=torch.float64)}
        if sound:
            inp["sound"] = torch.randn(cfg.sound_dim, SOUND, generator=g)
            inp["sound_timesteps"] = torch.full((SOUND,), 700.0, dtype=torch.float64)
        return inp

    def forward(self, model, inputs: dict, device=None, dtype=None):
        kw = {}
        if "sound" in inputs:
            kw = {"sound": _to(device, inputs["sound"]), "sound_timesteps": inputs["sound_timesteps"]}
        out = model(_to(device, inputs["input_ids"]), _to(device, inputs["vision"]), inputs["vision_timesteps"],
                    vision_noisy_frames=inputs["vision_noisy_frames"], **kw)
        return {k: v for k, v in out.items() if v is not None}

    # ---- diffusers -----------------------------------------------------------------------------------
    def diffusers_peer(self, cfg) -> DiffusersPeer:
        kw = cfg.to_diffusers_dict()
        kw.pop("_class_name", None)

        def build(dtype=torch.float32, device="cpu"):
            from diffusers.models.transformers.transformer_cosmos3 import Cosmos3OmniTransformer

            prev = torch.get_default_dtype()
            torch.set_default_dtype(dtype)
            try:
                with torch.device(device):
                    return Cosmos3OmniTransformer(**kw)
            finally:
                torch.set_default_dtype(prev)

        return DiffusersPeer(build, dict, lambda m, inputs, fps=24.0: diffusers_call(m, cfg, inputs, fps))


def diffusers_call(m, cfg, inputs: dict, fps: float = 24.0) -> dict:
    """diffusers' packed inputs for one sample [text | vision | sound], the pipeline's mRoPE ids,
    vision_noisy_frames (default every frame) at their timesteps; the outputs as phyx's forward
    returns them ({'vision': [1, C, T, H, W], 'sound': [C_s, T_s]})."""
    from phyx.models.cosmos3.positions import SequenceLayout, position_ids

    ids, vis = inputs["input_ids"], inputs["vision"]
    dev = vis.device
    U = int(ids.shape[0])
    C, T, H, W = vis.shape
    p = cfg.latent_patch_size
    h, w = -(-H // p), -(-W // p)
    Nv = T * h * w
    snd = inputs.get("sound")
    Ts = snd.shape[1] if snd is not None else 0
    layout = SequenceLayout(U, (T, h, w), Ts, 0)
    noisy = torch.as_tensor(inputs.get("vision_noisy_frames", torch.arange(T)), device=dev)
    mse = (U + noisy[:, None] * h * w + torch.arange(h * w, device=dev)).reshape(-1)
    vt = torch.as_tensor(inputs["vision_timesteps"], dtype=torch.float32, device=dev).expand(mse.numel())
    kw = dict(input_ids=ids, text_indexes=torch.arange(U, device=dev),
              position_ids=position_ids(cfg, layout, fps).to(device=dev, dtype=torch.float32), und_len=U,
              sequence_length=layout.total, vision_tokens=[vis[None]], vision_token_shapes=[(T, h, w)],
              vision_sequence_indexes=torch.arange(U, U + Nv, device=dev), vision_mse_loss_indexes=mse,
              vision_timesteps=vt, vision_noisy_frame_indexes=[noisy], return_dict=False)
    if snd is not None:
        si = torch.arange(U + Nv, U + Nv + Ts, device=dev)
        st = torch.as_tensor(inputs["sound_timesteps"], dtype=torch.float32, device=dev).expand(Ts)
        kw.update(sound_tokens=[snd], sound_token_shapes=[(Ts, 1, 1)], sound_sequence_indexes=si,
                  sound_mse_loss_indexes=si, sound_timesteps=st, sound_noisy_frame_indexes=[torch.arange(Ts)])
    out = m(**kw)
    res = {"vision": out[0][0]}
    if snd is not None:
        res["sound"] = out[1][0]
    return res
