"""What `phyx generate` needs to know about each model it runs: tasks, VAE, text encoder,
sampler and defaults. Model names, aliases and families come from phyx.models.registry (the one
table of names); every entry here is keyed by its canonical name there.

Numbers for the real models are upstream's defaults, each cited where it is set below (Wan2.2
and LingBot-World `wan/configs/*.py` and `generate.py`; diffusers' Cosmos-Predict2 and Cosmos3
pipelines); each can be overridden on the command line. Tiny variants
keep each family's code path (VAE generation, conditioning, experts, camera) at toy sizes, with
seeded random weights written once to a cache directory (see tiny.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from phyx.models import registry as model_registry
from phyx.pipelines import prompts

TASKS = ("t2v", "i2v", "t2i", "v2w", "t2av")


@dataclass(frozen=True)
class GenerateSpec:
    name: str                       # canonical, phyx.models.registry
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
    tiny: bool = False              # seeded toy checkpoint built on first use (tiny.py, keyed by name)
    # per-task overrides of the fields above, e.g. Cosmos-Predict2's Text2Image resolution
    task_defaults: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def family(self) -> str:
        return model_registry.resolve(self.name).family

    @property
    def description(self) -> str:
        return model_registry.resolve(self.name).description

    @property
    def tiny_recipe(self) -> str | None:
        return self.name if self.tiny else None

    def default_task(self) -> str:
        return self.tasks[0]

    def for_task(self, task: str) -> "GenerateSpec":
        """This spec with the task's own defaults applied."""
        return replace(self, **self.task_defaults.get(task, {}))


# Wan2.2 wan/configs/wan_ti2v_5B.py: sample_shift 5.0, sample_steps 50, sample_guide_scale 5.0,
# frame_num 121, sample_fps 24; size 1280*704 (generate.py SUPPORTED_SIZES['ti2v-5B']);
# sample_neg_prompt from shared_config.py.
_WAN_5B = dict(vae="wan2.2", text_encoder="umt5", sampler="unipc", steps=50, guidance=5.0,
               shift=5.0, height=704, width=1280, frames=121, fps=24.0, negative_prompt=prompts.WAN_NEGATIVE_PROMPT)
# Wan2.2 wan/configs/shared_config.py: frame_num 81, sample_fps 16, sample_neg_prompt; generate.py
# --size default 1280*720 (width*height). Steps / shift / guidance pair / boundary are per model below.
_WAN_A14B = dict(vae="wan2.1", text_encoder="umt5", sampler="unipc", steps=40, height=720,
                 width=1280, frames=81, fps=16.0, moe=True, negative_prompt=prompts.WAN_NEGATIVE_PROMPT)
# diffusers pipelines/cosmos/pipeline_cosmos2_video2world.py __call__: height 704, width 1280,
# num_frames 93, num_inference_steps 35, guidance_scale 7.0, fps 16, DEFAULT_NEGATIVE_PROMPT;
# pipeline_cosmos2_text2image.py __call__: height 768, width 1360 (steps / guidance the same).
_PREDICT2 = dict(vae="wan2.1", text_encoder="t5", sampler="cosmos-rf", steps=35,
                 guidance=7.0, height=704, width=1280, frames=93, fps=16.0,
                 negative_prompt=prompts.COSMOS_PREDICT2_NEGATIVE_PROMPT,
                 task_defaults={"t2i": dict(height=768, width=1360, frames=1)})
# diffusers pipelines/cosmos/pipeline_cosmos3_omni.py __call__: num_frames 189, height 720,
# width 1280, fps 24.0, num_inference_steps 35, guidance_scale 6.0, negative prompt "" (None).
# The flow shift is not the pipeline's: it lives in the checkpoint's scheduler/scheduler_config.json
# (read by families/cosmos3.checkpoint_shift); 5.0 is only the fallback when that file is absent.
_COSMOS3 = dict(vae="wan2.2", text_encoder="tokens", sampler="unipc", steps=35, guidance=6.0,
                shift=5.0, height=720, width=1280, frames=189, fps=24.0)
# Tiny models: toy sizes, no upstream prompt conventions, the checkpoint's own expert boundary.
_TINY = dict(tiny=True, height=64, width=64, frames=17, steps=6, text_len=16, negative_prompt="", boundary=None,
             task_defaults={})

SPECS: dict[str, GenerateSpec] = {s.name: s for s in [
    GenerateSpec("wan2.2-ti2v", tasks=("t2v", "i2v"), **_WAN_5B),
    GenerateSpec("wan2.2-t2v", tasks=("t2v",), **_WAN_5B),
    GenerateSpec("wan2.2-i2v", tasks=("i2v",), **_WAN_5B),
    # Wan2.2 wan/configs/wan_t2v_A14B.py: sample_shift 12.0, sample_steps 40, boundary 0.875,
    # sample_guide_scale (3.0, 4.0) = (low noise, high noise).
    GenerateSpec("wan2.2-a14b-t2v", tasks=("t2v",), guidance=3.0, guidance_high=4.0, shift=12.0, boundary=0.875,
                 **_WAN_A14B),
    # Wan2.2 wan/configs/wan_i2v_A14B.py: sample_shift 5.0, sample_steps 40, boundary 0.900,
    # sample_guide_scale (3.5, 3.5).
    GenerateSpec("wan2.2-a14b-i2v", tasks=("i2v",), guidance=3.5, guidance_high=3.5, shift=5.0, boundary=0.900,
                 **_WAN_A14B),
    # LingBot-World wan/configs/wan_i2v_A14B.py: sample_shift 10.0, sample_steps 70, boundary 0.947,
    # sample_guide_scale (5.0, 5.0), its own longer sample_neg_prompt; shared_config.py frame_num 81,
    # sample_fps 16; generate.py --size default 1280*720.
    GenerateSpec("lingbot-world", tasks=("i2v",), guidance=5.0, guidance_high=5.0, shift=10.0, boundary=0.947,
                 camera=True, **{**_WAN_A14B, "steps": 70, "negative_prompt": prompts.LINGBOT_NEGATIVE_PROMPT}),
    GenerateSpec("cosmos-predict2-2b", tasks=("t2i", "v2w"), **_PREDICT2),
    GenerateSpec("cosmos-predict2-14b", tasks=("t2i", "v2w"), **_PREDICT2),
    GenerateSpec("cosmos3-nano", tasks=("t2v", "i2v", "t2av"), **_COSMOS3),
    # ---- tiny variants: seeded random weights, built on first use ----
    GenerateSpec("tiny-wan", tasks=("t2v",),
                 **{**_WAN_A14B, "moe": False, **_TINY, "guidance": 5.0, "shift": 5.0}),
    GenerateSpec("tiny-wan-i2v", tasks=("i2v",),
                 **{**_WAN_A14B, "moe": False, **_TINY, "guidance": 5.0, "shift": 5.0}),
    GenerateSpec("tiny-wan-ti2v", tasks=("t2v", "i2v"),
                 **{**_WAN_5B, **_TINY}),
    GenerateSpec("tiny-wan-a14b", tasks=("t2v",), guidance_high=6.0,
                 **{**_WAN_A14B, **_TINY, "guidance": 5.0, "shift": 5.0}),
    GenerateSpec("tiny-wan-a14b-i2v", tasks=("i2v",), guidance_high=6.0,
                 **{**_WAN_A14B, **_TINY, "guidance": 5.0, "shift": 5.0}),
    GenerateSpec("tiny-lingbot", tasks=("i2v",), camera=True, guidance_high=6.0,
                 **{**_WAN_A14B, **_TINY, "guidance": 5.0, "shift": 5.0}),
    GenerateSpec("tiny-cosmos-predict2", tasks=("t2i",), **{**_PREDICT2, **_TINY, "frames": 1}),
    GenerateSpec("tiny-cosmos-predict2-v2w", tasks=("v2w",), **{**_PREDICT2, **_TINY}),
    GenerateSpec("tiny-cosmos3", tasks=("t2v", "i2v", "t2av"),
                 **{**_COSMOS3, **_TINY, "guidance": 7.0}),
]}

# phyx generate's old annotation name (pipelines/generate.py); the class is GenerateSpec.
ModelSpec = GenerateSpec


def get_spec(name: str) -> GenerateSpec:
    """The spec of model `name` (canonical or alias); UnknownModelError (a KeyError) otherwise."""
    from phyx.errors import UnknownModelError

    canon = model_registry.canonical(name)
    if canon not in SPECS:
        raise UnknownModelError(f"{canon!r} is not a model `phyx generate` runs; those are: {', '.join(names())}")
    return SPECS[canon]


def names() -> list[str]:
    return sorted(SPECS)


def register(spec: GenerateSpec) -> None:
    """Add (or replace) a model, e.g. from a family package that lands later."""
    SPECS[spec.name] = spec


def with_overrides(spec: GenerateSpec, **kw) -> GenerateSpec:
    return replace(spec, **{k: v for k, v in kw.items() if v is not None})
