"""Cosmos-Predict2 (MiniTrainDIT) behind the FamilyAdapter contract (phyx.models.family).

Its parity / oracle case: one teacher-forced x0 prediction (x_t = x0 + sigma eps formed on the
host, sigma float64) through `denoise` (rectified-flow scaling; Video2World's clean conditioning
frame), batch 2, 12 T5 tokens with a bool keep-mask of different lengths (the path where the NPU's
inverted mask matters). Its training loss is the EDM-weighted x0 loss.
"""
from __future__ import annotations

from pathlib import Path

import torch

from phyx.models.common.inputs import DATASET, batch_order, gen
from phyx.models.common.inputs import to as _to
from phyx.models.family import DiffusersPeer, FamilyAdapterBase, TrainingLoss, save_diffusers_layout

LATENT = {False: (1, 8, 10), True: (3, 6, 10)}     # (T, H, W) by video2world
TEXT = 12
LAYERS = ("patch_embed.proj", "time_embed", "transformer_blocks.*", "transformer_blocks.*.attn1",
          "transformer_blocks.*.attn2", "transformer_blocks.*.ff", "proj_out")


def _kwargs(model, inputs, device):
    kw = {"text_mask": _to(device, inputs["text_mask"])}
    if model.config.video2world:
        kw.update(cond_latents=_to(device, inputs["x0"]), num_conditional_frames=1)
    return kw


class Predict2Adapter(FamilyAdapterBase):
    name = "cosmos-predict2"
    capture_layers = LAYERS
    pipeline = "phyx.pipelines.families.cosmos_predict2"
    LAYERS_FIELD, HEADS_FIELD = "num_layers", "num_attention_heads"

    def __init__(self):
        from phyx.models.cosmos_predict2.config import PRESETS, Predict2Config
        from phyx.models.cosmos_predict2.tiny import tiny_config

        self.config_class = Predict2Config
        self.configs = dict(PRESETS)
        self.tiny_configs = {"tiny-text2image": tiny_config("text2image"),
                             "tiny-video2world": tiny_config("video2world")}

    def config_to_dict(self, cfg) -> dict:
        return cfg.to_diffusers_dict()

    # ---- building / checkpoints ------------------------------------------------------------------
    def construct(self, cfg):
        from phyx.models.cosmos_predict2.model import Predict2DiT

        return Predict2DiT(cfg)

    def detect(self, path: Path) -> bool:
        from phyx.models.cosmos_predict2.formats import detect

        return detect(Path(path)) is not None

    def load(self, path: Path, **kw):
        from phyx.models.cosmos_predict2.loading import load

        return load(path, **kw)

    def save(self, model, directory, **kw) -> Path:
        return save_diffusers_layout(model, directory)

    # ---- one step ----------------------------------------------------------------------------------
    def make_inputs(self, cfg, seed: int, **opts) -> dict:
        from phyx.models.cosmos_predict2.diffusion import sample_training_sigma

        g = gen(seed)
        T, H, W = LATENT[cfg.video2world]
        B = 2
        x0 = torch.randn(B, cfg.out_channels, T, H, W, generator=g)
        noise = torch.randn(B, cfg.out_channels, T, H, W, generator=g)
        sigma = sample_training_sigma(B, g)               # float64 on the host
        lens = torch.tensor([TEXT, TEXT - 5])
        return {"x0": x0, "noise": noise, "sigma": sigma,
                "text": torch.randn(B, TEXT, cfg.text_embed_dim, generator=g),
                "text_mask": torch.arange(TEXT)[None] < lens[:, None]}

    def forward(self, model, inputs: dict, device=None, dtype=None):
        """One teacher-forced step: x_t = x0 + sigma eps formed on the host, x0 prediction."""
        from phyx.models.cosmos_predict2.diffusion import denoise

        s = inputs["sigma"].to(torch.float32).view(-1, 1, 1, 1, 1)
        x_t = inputs["x0"] + s * inputs["noise"]
        return denoise(model, _to(device, x_t), inputs["sigma"], _to(device, inputs["text"]),
                       **_kwargs(model, inputs, device))

    def loss(self, cfg, **opts) -> TrainingLoss:
        def train_inputs(seed: int) -> dict:
            sets = [self.make_inputs(cfg, seed * 31 + i) for i in range(DATASET // 2)]
            return {"data": torch.cat([s["x0"] for s in sets]), "text": torch.cat([s["text"] for s in sets]),
                    "text_mask": torch.cat([s["text_mask"] for s in sets])}

        return TrainingLoss(edm_batch, edm_loss, train_inputs, "cosmos-predict2 EDM loss")

    # ---- diffusers -----------------------------------------------------------------------------------
    def diffusers_peer(self, cfg) -> DiffusersPeer:
        kw = cfg.to_diffusers_dict()
        kw.pop("_class_name", None)

        def build(dtype=torch.float32, device="cpu"):
            from diffusers import CosmosTransformer3DModel

            from phyx.models.cosmos_predict2.compat import patch_diffusers_cosmos_torchvision

            patch_diffusers_cosmos_torchvision()
            prev = torch.get_default_dtype()
            torch.set_default_dtype(dtype)
            try:
                with torch.device(device):
                    return CosmosTransformer3DModel(**kw)
            finally:
                torch.set_default_dtype(prev)

        def forward(m, inputs):
            from phyx.models.cosmos_predict2.diffusion import denoise

            shim = _PhyxCall(m, cfg)
            s = inputs["sigma"].to(torch.float32).view(-1, 1, 1, 1, 1)
            return denoise(shim, inputs["x0"] + s * inputs["noise"], inputs["sigma"], inputs["text"],
                           **_kwargs(shim, inputs, None))

        return DiffusersPeer(build, dict, forward)


class _PhyxCall:
    """diffusers' CosmosTransformer3DModel called with Predict2DiT's signature, so `denoise`
    (the rectified-flow math) runs unchanged on the oracle."""

    def __init__(self, model, cfg):
        self.model, self.config = model, cfg

    def parameters(self):
        return self.model.parameters()

    def __call__(self, x, t, text, *, fps=None, condition_mask=None, padding_mask=None, text_mask=None):
        if padding_mask is None and self.config.concat_padding_mask:
            padding_mask = x.new_zeros(1, 1, x.shape[-2], x.shape[-1])   # no padding
        return self.model(x, t, text, attention_mask=None if text_mask is None else text_mask.bool(), fps=fps,
                          condition_mask=condition_mask, padding_mask=padding_mask, return_dict=False)[0]


def edm_batch(inputs: dict, step: int, seed: int = 0) -> dict:
    """Cosmos-Predict2 training draws: data order, sigma = exp(N(0,1)) (float64) and eps, all on
    the CPU from (seed, step)."""
    from phyx.models.cosmos_predict2.diffusion import sample_training_sigma

    g, idx = batch_order(seed, step, 2, DATASET)
    x0 = inputs["data"][idx]
    sigma = sample_training_sigma(len(idx), g)
    noise = torch.randn(x0.shape, generator=g)
    return {"x0": x0, "noise": noise, "sigma": sigma, "text": inputs["text"][idx],
            "text_mask": inputs["text_mask"][idx]}


def edm_loss(model, batch: dict, device, dtype, forward) -> torch.Tensor:
    from phyx.models.cosmos_predict2.diffusion import training_loss

    out = training_loss(model, _to(device, batch["x0"]), _to(device, batch["text"]), batch["sigma"],
                        _to(device, batch["noise"]), **_kwargs(model, batch, device))
    return out["loss"]
