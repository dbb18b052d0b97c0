"""The models a multi-GPU run can measure, behind one small interface.

A ModelSpec builds the model for the *current* phyx parallel state (single device when none is
set) with seeded weights (mg_init), draws its inputs on the CPU from a seed, and runs one step:
  step(model, inputs, 'cond')    the conditional prediction (tp / sp layouts compare this);
  step(model, inputs, 'uncond')  the unconditional one (for the CFG noise floor);
  step(model, inputs, 'guided')  cond and uncond combined with the guidance scale through
                                 phyx.parallel's CFG helpers: batched on one device, one branch
                                 per cfg rank under cfg = 2 (cfg layouts compare this).
Every step returns the full output tensor, identical on every rank.

A family whose phyx package is missing (or lacks what the harness needs) raises
ModelUnavailable with the reason; the run records it as skipped.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from mg_init import init_seeded_

RESOLUTIONS = ("tiny", "480p", "720p")


class ModelUnavailable(RuntimeError):
    pass


def _cpu_randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float32)


class ModelSpec:
    family = ""
    name = ""

    def __init__(self, name, cfg, latent, text_len, full_layers, guidance):
        self.name, self.cfg, self.latent, self.text_len = name, cfg, tuple(latent), text_len
        self.full_layers, self.guidance = full_layers, guidance

    # what the JSON records about the shape -----------------------------------------------------
    @property
    def seq_len(self) -> int:
        f, h, w = self.latent[1:]
        return f * (h // 2) * (w // 2)

    def describe(self) -> dict:
        cfg = self.cfg.to_dict() if hasattr(self.cfg, "to_dict") else dataclasses.asdict(self.cfg)
        cfg.pop("extra", None)
        return {"name": self.name, "family": self.family, "layers": self.layers,
                "full_layers": self.full_layers, "heads": self.heads, "config": cfg}

    def shape(self) -> dict:
        return {"batch": 1, "latent": list(self.latent), "seq_len": self.seq_len, "text_len": self.text_len}

    keep_fp32 = staticmethod(lambda name: False)

    def build(self, dtype, device, seed, rng_device):
        with torch.device("meta"):
            model = self._construct()
        init_seeded_(model, seed, dtype, device, rng_device=rng_device, keep_fp32=self.keep_fp32)
        return model.eval().requires_grad_(False)

    @staticmethod
    def to_device(inputs: dict, device) -> dict:
        return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}


# --- Wan2.1 ----------------------------------------------------------------------------------
class WanSpec(ModelSpec):
    family = "wan"
    CONFIGS = {"wan-14b": "wan2.1-t2v-14b", "wan-1.3b": "wan2.1-t2v-1.3b", "wan-tiny": "tiny-t2v"}
    # 480x832 and 720x1280 at 81 frames -> latent 21 x 60 x 104 and 21 x 90 x 160
    LATENT = {"tiny": (3, 6, 10), "480p": (21, 60, 104), "720p": (21, 90, 160)}

    def __init__(self, name, res, layers=None, latent=None, text_len=None, guidance=5.0):
        try:
            from phyx.models.wan import get_config
            from phyx.models.wan.model import keep_fp32
        except ImportError as e:
            raise ModelUnavailable(f"phyx.models.wan does not import: {e}") from e
        cfg = get_config(self.CONFIGS[name])
        full = cfg.num_layers
        if layers:
            cfg = cfg.replace(num_layers=min(layers, full))
        self.keep_fp32 = keep_fp32
        super().__init__(name, cfg, (cfg.in_dim, *(latent or self.LATENT[res])),
                         min(text_len or cfg.text_len, cfg.text_len), full, guidance)

    layers = property(lambda s: s.cfg.num_layers)
    heads = property(lambda s: s.cfg.num_heads)

    def _construct(self):
        from phyx.models.wan import WanModel
        return WanModel(self.cfg)          # layout from the current parallel state

    def make_inputs(self, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        return {"x": _cpu_randn(g, 1, *self.latent), "t": torch.tensor([500.0]),
                "ctx": _cpu_randn(g, 1, self.text_len, self.cfg.text_dim),
                "ctx_null": _cpu_randn(g, 1, self.text_len, self.cfg.text_dim)}

    def step(self, model, inp, branch: str):
        if branch == "cond":
            return model(inp["x"], inp["t"], inp["ctx"])
        if branch == "uncond":
            return model(inp["x"], inp["t"], inp["ctx_null"])
        from phyx.parallel import cfg_gather_combine, cfg_split, get_parallel_state
        both = get_parallel_state().cfg_size == 1
        rep = (lambda a: torch.cat([a, a])) if both else (lambda a: a)
        pred = model(rep(inp["x"]), rep(inp["t"]), cfg_split(inp["ctx"], inp["ctx_null"]))
        return cfg_gather_combine(pred, self.guidance)

    def combine(self, cond, uncond):
        return uncond + self.guidance * (cond - uncond)


# --- Cosmos-Predict2 -------------------------------------------------------------------------
class Predict2Spec(ModelSpec):
    family = "cosmos-predict2"
    PRESETS = {"cosmos-predict2-2b": "2B-Video2World", "cosmos-predict2-14b": "14B-Video2World",
               "cosmos-predict2-tiny": None}
    # 480x832 and 704x1280 at 93 frames -> latent 24 x 60 x 104 and 24 x 88 x 160
    LATENT = {"tiny": (3, 6, 10), "480p": (24, 60, 104), "720p": (24, 88, 160)}
    SIGMA, FPS, TEXT_LEN = 3.0, 16, 512

    def __init__(self, name, res, layers=None, latent=None, text_len=None, guidance=5.0):
        try:
            from phyx.models import cosmos_predict2 as cp
            _ = (cp.denoise, cp.guided_x0, cp.Predict2DiT, cp.PRESETS, cp.tiny_config)
        except (ImportError, AttributeError) as e:
            raise ModelUnavailable(f"phyx.models.cosmos_predict2 lacks what the harness needs: {e}") from e
        preset = self.PRESETS[name]
        cfg = cp.tiny_config("video2world", num_attention_heads=4) if preset is None else \
            dataclasses.replace(cp.PRESETS[preset])
        full = cfg.num_layers
        if layers:
            cfg = dataclasses.replace(cfg, num_layers=min(layers, full))
        tl = text_len or (8 if preset is None else self.TEXT_LEN)
        super().__init__(name, cfg, (cfg.out_channels, *(latent or self.LATENT[res])), tl, full, guidance)

    layers = property(lambda s: s.cfg.num_layers)
    heads = property(lambda s: s.cfg.num_attention_heads)

    def _construct(self):
        from phyx.models.cosmos_predict2 import Predict2DiT
        return Predict2DiT(self.cfg)

    def make_inputs(self, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        return {"x": _cpu_randn(g, 1, *self.latent), "cond": _cpu_randn(g, 1, *self.latent),
                "text": _cpu_randn(g, 1, self.text_len, self.cfg.text_embed_dim),
                "neg": _cpu_randn(g, 1, self.text_len, self.cfg.text_embed_dim)}

    def step(self, model, inp, branch: str):
        from phyx.models import cosmos_predict2 as cp
        kw = dict(cond_latents=inp["cond"], num_conditional_frames=1, fps=self.FPS)
        if branch == "guided":
            return cp.guided_x0(model, inp["x"], self.SIGMA, inp["text"], inp["neg"], self.guidance, **kw)
        return cp.denoise(model, inp["x"], self.SIGMA, inp["text" if branch == "cond" else "neg"], **kw)

    def combine(self, cond, uncond):          # Cosmos guides x0: cond + g (cond - uncond)
        return cond + self.guidance * (cond - uncond)


# --- Cosmos3 ---------------------------------------------------------------------------------
class Cosmos3Spec(ModelSpec):
    family = "cosmos3"
    # 48-channel Wan2.2 latents (16x spatial, 4x temporal): 480x832 / 704x1280 at 93 frames
    LATENT = {"tiny": (3, 4, 6), "480p": (24, 30, 52), "720p": (24, 44, 80)}
    TIMESTEP, FPS, TEXT_LEN = 600.0, 24.0, 512

    def __init__(self, name, res, layers=None, latent=None, text_len=None, guidance=5.0):
        try:
            from phyx.models import cosmos3 as c3
            from phyx.models.cosmos3.guidance import BranchCaches, guided_step  # noqa: F401
            _ = (c3.NANO, c3.Cosmos3Omni, c3.tiny_config)
        except (ImportError, AttributeError) as e:
            raise ModelUnavailable(f"phyx.models.cosmos3 lacks what the harness needs: {e}") from e
        cfg = c3.tiny_config() if name == "cosmos3-tiny" else dataclasses.replace(c3.NANO)
        full = cfg.num_hidden_layers
        if layers:
            cfg = dataclasses.replace(cfg, num_hidden_layers=min(layers, full))
        tl = text_len or (7 if name == "cosmos3-tiny" else self.TEXT_LEN)
        super().__init__(name, cfg, (cfg.latent_channel, *(latent or self.LATENT[res])), tl, full, guidance)

    layers = property(lambda s: s.cfg.num_hidden_layers)
    heads = property(lambda s: s.cfg.num_attention_heads)
    keep_fp32 = staticmethod(lambda name: name.startswith("time_embedder."))  # as diffusers keeps it

    @property
    def seq_len(self) -> int:
        p = self.cfg.latent_patch_size
        f, h, w = self.latent[1:]
        return f * math.ceil(h / p) * math.ceil(w / p)

    def shape(self) -> dict:
        return {**super().shape(), "uncond_text_len": max(1, self.text_len // 2),
                "note": "vision tokens only (no sound / action); text K/V cached per branch after the first step"}

    def _construct(self):
        from phyx.models.cosmos3 import Cosmos3Omni
        return Cosmos3Omni(self.cfg)       # TP layout from the current parallel state

    def build(self, dtype, device, seed, rng_device):
        from phyx.models.cosmos3.guidance import BranchCaches
        model = super().build(dtype, device, seed, rng_device)
        model.mg_caches = BranchCaches()   # each prompt's text tower runs once per model, as in sampling
        return model

    def make_inputs(self, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        vocab = self.cfg.vocab_size
        return {"vision": _cpu_randn(g, *self.latent),
                "cond_ids": torch.randint(0, vocab, (self.text_len,), generator=g),
                "uncond_ids": torch.randint(0, vocab, (max(1, self.text_len // 2),), generator=g)}

    def _media(self, inp):
        T = self.latent[1]
        return dict(vision=inp["vision"], vision_timesteps=self.TIMESTEP,
                    vision_noisy_frames=list(range(1, T)) if T > 1 else None)

    def step(self, model, inp, branch: str):
        from phyx.models.cosmos3.guidance import guided_step
        if branch == "guided":
            return guided_step(model, self._media(inp), inp["cond_ids"], inp["uncond_ids"], self.guidance,
                               caches=model.mg_caches, fps=self.FPS)["vision"]
        ids = inp["cond_ids" if branch == "cond" else "uncond_ids"]
        cache = model.mg_caches.get(model, branch, ids, None)
        return model(ids, text_cache=cache, fps=self.FPS, **self._media(inp))["vision"]

    def combine(self, cond, uncond):
        return uncond + self.guidance * (cond - uncond)


SPECS = {**{n: WanSpec for n in WanSpec.CONFIGS}, **{n: Predict2Spec for n in Predict2Spec.PRESETS},
         "cosmos3-nano": Cosmos3Spec, "cosmos3-tiny": Cosmos3Spec}


def make_spec(name: str, res: str, **kw) -> ModelSpec:
    if name not in SPECS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(SPECS)}")
    if res not in RESOLUTIONS:
        raise ValueError(f"unknown resolution {res!r}; choose from {RESOLUTIONS}")
    return SPECS[name](name, res, **kw)
