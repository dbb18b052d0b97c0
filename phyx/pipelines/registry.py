"""The models `phyx generate` knows: family, tasks, VAE, text encoder, sampler and defaults.

Numbers for the real models are upstream's defaults, each cited where it is set below (Wan2.2
and LingBot-World `wan/configs/*.py` and `generate.py`; diffusers' Cosmos-Predict2 and Cosmos3
pipelines); each can be overridden on the command line. Tiny variants
keep each family's code path (VAE generation, conditioning, experts, camera) at toy sizes, with
seeded random weights written once to a cache directory (see tiny.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from phyx.pipelines import prompts

FAMILIES = ("wan", "cosmos-predict2", "cosmos3")
TASKS = ("t2v", "i2v", "t2i", "v2w", "t2av")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    tasks: tuple[str, ...]          # the first one is the default
    vae: str                        # 'wan2.1' | 'wan2.2' (diffusers AutoencoderKLWan configs)
    text_encoder: str               # 'umt5' | 't5' | 'tokens' (Cosmos3 reads token ids)
    sampler: str                    # schedulers.SAMPLERS
    steps: int
    guidance: float
    height: int
    width: int
    frames: int
    fps: float
    shift: float = 1.0
    guidance_high: float | None = None  # A14B: guidance of the high-noise expert
    boundary: float | None = None   # A14B: expert switch, fraction of num_train_timesteps (None: checkpoint's)
    negative_prompt: str = ""       # used when --negative-prompt is not given
    text_len: int = 512
    moe: bool = False               # Wan2.2 A14B: transformer/ (high noise) + transformer_2/ (low)
    camera: bool = False            # LingBot-World camera control
    tiny: bool = False
    tiny_recipe: str | None = None  # tiny.py builder key
    description: str = ""
    # per-task overrides of the fields above, e.g. Cosmos-Predict2's Text2Image resolution
    task_defaults: dict = field(default_factory=dict, compare=False, hash=False)

    def default_task(self) -> str:
        return self.tasks[0]

    def for_task(self, task: str) -> "ModelSpec":
        """This spec with the task's own defaults applied."""
        return replace(self, **self.task_defaults.get(task, {}))


# Wan2.2 wan/configs/wan_ti2v_5B.py: sample_shift 5.0, sample_steps 50, sample_guide_scale 5.0,
# frame_num 121, sample_fps 24; size 1280*704 (generate.py SUPPORTED_SIZES['ti2v-5B']);
# sample_neg_prompt from shared_config.py.
_WAN_5B = dict(family="wan", vae="wan2.2", text_encoder="umt5", sampler="unipc", steps=50, guidance=5.0,
               shift=5.0, height=704, width=1280, frames=121, fps=24.0, negative_prompt=prompts.WAN_NEGATIVE_PROMPT)
# Wan2.2 wan/configs/shared_config.py: frame_num 81, sample_fps 16, sample_neg_prompt; generate.py
# --size default 1280*720 (width*height). Steps / shift / guidance pair / boundary are per model below.
_WAN_A14B = dict(family="wan", vae="wan2.1", text_encoder="umt5", sampler="unipc", steps=40, height=720,
                 width=1280, frames=81, fps=16.0, moe=True, negative_prompt=prompts.WAN_NEGATIVE_PROMPT)
# diffusers pipelines/cosmos/pipeline_cosmos2_video2world.py __call__: height 704, width 1280,
# num_frames 93, num_inference_steps 35, guidance_scale 7.0, fps 16, DEFAULT_NEGATIVE_PROMPT;
# pipeline_cosmos2_text2image.py __call__: height 768, width 1360 (steps / guidance the same).
_PREDICT2 = dict(family="cosmos-predict2", vae="wan2.1", text_encoder="t5", sampler="cosmos-rf", steps=35,
                 guidance=7.0, height=704, width=1280, frames=93, fps=16.0,
                 negative_prompt=prompts.COSMOS_PREDICT2_NEGATIVE_PROMPT,
                 task_defaults={"t2i": dict(height=768, width=1360, frames=1)})
# diffusers pipelines/cosmos/pipeline_cosmos3_omni.py __call__: num_frames 189, height 720,
# width 1280, fps 24.0, num_inference_steps 35, guidance_scale 6.0, negative prompt "" (None).
# The flow shift is not the pipeline's: it lives in the checkpoint's scheduler/scheduler_config.json
# (read by families/cosmos3.checkpoint_shift); 5.0 is only the fallback when that file is absent.
_COSMOS3 = dict(family="cosmos3", vae="wan2.2", text_encoder="tokens", sampler="unipc", steps=35, guidance=6.0,
                shift=5.0, height=720, width=1280, frames=189, fps=24.0)
# Tiny models: toy sizes, no upstream prompt conventions, the checkpoint's own expert boundary.
_TINY = dict(tiny=True, height=64, width=64, frames=17, steps=6, text_len=16, negative_prompt="", boundary=None,
             task_defaults={})

SPECS: dict[str, ModelSpec] = {s.name: s for s in [
    ModelSpec("wan2.2-ti2v", tasks=("t2v", "i2v"), description="Wan2.2 TI2V-5B, text or text+image to video",
              **_WAN_5B),
    ModelSpec("wan2.2-t2v", tasks=("t2v",), description="Wan2.2 TI2V-5B as text-to-video", **_WAN_5B),
    ModelSpec("wan2.2-i2v", tasks=("i2v",), description="Wan2.2 TI2V-5B as image-to-video", **_WAN_5B),
    # Wan2.2 wan/configs/wan_t2v_A14B.py: sample_shift 12.0, sample_steps 40, boundary 0.875,
    # sample_guide_scale (3.0, 4.0) = (low noise, high noise).
    ModelSpec("wan2.2-a14b-t2v", tasks=("t2v",), guidance=3.0, guidance_high=4.0, shift=12.0, boundary=0.875,
              description="Wan2.2 T2V-A14B (two experts)", **_WAN_A14B),
    # Wan2.2 wan/configs/wan_i2v_A14B.py: sample_shift 5.0, sample_steps 40, boundary 0.900,
    # sample_guide_scale (3.5, 3.5).
    ModelSpec("wan2.2-a14b-i2v", tasks=("i2v",), guidance=3.5, guidance_high=3.5, shift=5.0, boundary=0.900,
              description="Wan2.2 I2V-A14B (two experts)", **_WAN_A14B),
    # LingBot-World wan/configs/wan_i2v_A14B.py: sample_shift 10.0, sample_steps 70, boundary 0.947,
    # sample_guide_scale (5.0, 5.0), its own longer sample_neg_prompt; shared_config.py frame_num 81,
    # sample_fps 16; generate.py --size default 1280*720.
    ModelSpec("lingbot-world", tasks=("i2v",), guidance=5.0, guidance_high=5.0, shift=10.0, boundary=0.947,
              camera=True, description="LingBot-World: Wan2.2 I2V-A14B with camera control",
              **{**_WAN_A14B, "steps": 70, "negative_prompt": prompts.LINGBOT_NEGATIVE_PROMPT}),
    ModelSpec("cosmos-predict2-2b", tasks=("t2i", "v2w"), description="Cosmos-Predict2 2B (Text2Image / "
              "Video2World checkpoint)", **_PREDICT2),
    ModelSpec("cosmos-predict2-14b", tasks=("t2i", "v2w"), description="Cosmos-Predict2 14B", **_PREDICT2),
    ModelSpec("cosmos3-nano", tasks=("t2v", "i2v", "t2av"), description="Cosmos3 Nano omni (text/image to "
              "video, text to audio+video)", **_COSMOS3),
    # ---- tiny variants: seeded random weights, built on first use ----
    ModelSpec("tiny-wan", tasks=("t2v",), tiny_recipe="wan-t2v", description="tiny Wan T2V (Wan2.1 VAE)",
              **{**_WAN_A14B, "moe": False, **_TINY, "guidance": 5.0, "shift": 5.0}),
    ModelSpec("tiny-wan-i2v", tasks=("i2v",), tiny_recipe="wan-i2v",
              description="tiny Wan I2V (latent + mask concatenated, as A14B I2V)",
              **{**_WAN_A14B, "moe": False, **_TINY, "guidance": 5.0, "shift": 5.0}),
    ModelSpec("tiny-wan-ti2v", tasks=("t2v", "i2v"), tiny_recipe="wan-ti2v",
              description="tiny Wan2.2 TI2V (Wan2.2 VAE, first-frame latent + per-token timesteps)",
              **{**_WAN_5B, **_TINY}),
    ModelSpec("tiny-wan-a14b", tasks=("t2v",), tiny_recipe="wan-a14b-t2v", guidance_high=6.0,
              description="tiny Wan2.2 A14B T2V (two experts)",
              **{**_WAN_A14B, **_TINY, "guidance": 5.0, "shift": 5.0}),
    ModelSpec("tiny-wan-a14b-i2v", tasks=("i2v",), tiny_recipe="wan-a14b-i2v", guidance_high=6.0,
              description="tiny Wan2.2 A14B I2V (two experts)",
              **{**_WAN_A14B, **_TINY, "guidance": 5.0, "shift": 5.0}),
    ModelSpec("tiny-lingbot", tasks=("i2v",), tiny_recipe="lingbot", camera=True, guidance_high=6.0,
              description="tiny LingBot-World (two experts + camera control)",
              **{**_WAN_A14B, **_TINY, "guidance": 5.0, "shift": 5.0}),
    ModelSpec("tiny-cosmos-predict2", tasks=("t2i",), tiny_recipe="predict2-t2i",
              description="tiny Cosmos-Predict2 Text2Image", **{**_PREDICT2, **_TINY, "frames": 1}),
    ModelSpec("tiny-cosmos-predict2-v2w", tasks=("v2w",), tiny_recipe="predict2-v2w",
              description="tiny Cosmos-Predict2 Video2World", **{**_PREDICT2, **_TINY}),
    ModelSpec("tiny-cosmos3", tasks=("t2v", "i2v", "t2av"), tiny_recipe="cosmos3",
              description="tiny Cosmos3 omni (t2v, i2v, t2av with a tiny sound decoder)",
              **{**_COSMOS3, **_TINY, "guidance": 7.0}),
]}

ALIASES = {"tiny-wan-t2v": "tiny-wan", "tiny-wan-a14b-t2v": "tiny-wan-a14b",
           "tiny-cosmos-predict2-t2i": "tiny-cosmos-predict2", "lingbot": "lingbot-world",
           "wan2.2-t2v-a14b": "wan2.2-a14b-t2v", "wan2.2-i2v-a14b": "wan2.2-a14b-i2v",
           "wan2.2-ti2v-5b": "wan2.2-ti2v"}


def get_spec(name: str) -> ModelSpec:
    name = ALIASES.get(name, name)
    if name not in SPECS:
        raise KeyError(name)
    return SPECS[name]


def names() -> list[str]:
    return sorted(SPECS)


def register(spec: ModelSpec) -> None:
    """Add (or replace) a model, e.g. from a family package that lands later."""
    SPECS[spec.name] = spec


def with_overrides(spec: ModelSpec, **kw) -> ModelSpec:
    return replace(spec, **{k: v for k, v in kw.items() if v is not None})
