"""`phyx generate` as a function: named stages over one run context.

    resolve(args) -> Request          the model, task and one Settings; loads nothing
    validate(request) -> Request      every check that needs no model (sizes, sampler, inputs,
                                      output path and writer), before any model work
    select_backend(request) -> ctx    backend, parallel layout, device
    prepare_checkpoint(ctx)           tiny models: built once into the cache (rank 0 first)
    encode_text(ctx)                  prompt embeddings
    load_models(ctx)                  VAE + DiT
    build_conditioning(ctx)           sampler, latent shape, image / camera conditioning, Denoiser
    denoise(ctx)                      CPU-seeded noise -> guided loop
    decode(ctx)                       parallel VAE decode
    write_outputs(ctx) -> RunRecord   mp4 / png (+ wav) and the JSON sidecar, by rank 0

    from phyx.pipelines import GenerateArgs, generate
    result = generate(GenerateArgs(model="tiny-wan", out="out/tiny.mp4"))

GenerateArgs is also the command line: phyx/cli/generate.py builds its parser from the fields'
defaults and metadata below, so each default lives here once.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from phyx.errors import CheckpointError
from phyx.pipelines import _dist, inputs, registry, validate
from phyx.pipelines.inputs import InputError
from phyx.pipelines.protocol import Denoiser, PipelineFamily
from phyx.pipelines.sidecar import Timer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", **{k: k for k in DTYPES}}
VAE_STRIDES = {"wan2.1": (4, 8), "wan2.2": (4, 16)}   # (temporal, spatial)
DEFAULT_PROMPT = "a red ball rolls across a wooden floor, soft daylight"
TASKS = ("t2v", "i2v", "t2i", "v2w", "t2av")
SAMPLERS = ("unipc", "euler", "cosmos-rf")
MAX_STEPS = 1000     # the flow schedulers' training timesteps
SEED_MAX = 2 ** 63 - 2   # torch.Generator takes 64 bits; Cosmos3's sound noise uses seed + 1


def _opt(default, help: str, **cli):
    """A GenerateArgs field with its command-line help (cli: flag, choices, action, metavar)."""
    kind = dict(default_factory=default) if callable(default) else dict(default=default)
    return field(metadata={"help": help, **cli}, **kind)


@dataclass
class GenerateArgs:
    model: str = _opt("tiny-wan", "model name (see --list-models)")
    out: str = _opt("out/video.mp4", "output .mp4 (or .png for t2i); a .wav and the OUT.json sidecar go beside "
                                     "it", metavar="PATH")
    prompt: str = _opt(DEFAULT_PROMPT, "text prompt")
    negative_prompt: str | None = _opt(None, "default: the model's upstream negative prompt; \"\" for none")
    checkpoint: str | None = _opt(None, "checkpoint directory (transformer/, vae/, text_encoder/, tokenizer/); "
                                        "tiny-* models build their own when omitted", metavar="DIR")
    task: str | None = _opt(None, "default: the model's first task, i2v/v2w with --image, t2av with --sound",
                            choices=TASKS)
    image: str | None = _opt(None, "conditioning image (or video for v2w)", metavar="FILE")
    camera: str | None = _opt(None, "LingBot-World camera directory (intrinsics.npy [N,4], poses.npy [N,4,4])",
                              metavar="DIR")
    sound: bool = _opt(False, "also generate sound (cosmos3 t2av), written as .wav")
    backend: str | None = _opt(None, "cpu, cuda, npu, npu-emulated, ... (default: env PHYX_BACKEND, else "
                                     "autodetect)")
    policy: str | None = _opt(None, "kernel policy", choices=("reference", "fast"))
    cfg: int = _opt(1, "CFG-parallel ranks (1 or 2)", choices=(1, 2))
    sp: int = _opt(1, "sequence-parallel ranks (sp = ulysses x ring)")
    ring: int = _opt(1, "of the --sp ranks, how many pass K/V around a ring (ring attention); "
                        "1 < ring < sp is USP (Ulysses inside groups, ring across them)")
    tp: int = _opt(1, "tensor-parallel ranks")
    steps: int | None = _opt(None, f"denoising steps (1..{MAX_STEPS}; default: the model's)")
    guidance: float | None = _opt(None, "guidance scale (default: the model's)")
    guidance_high: float | None = _opt(None, "A14B: guidance of the high-noise expert (default: the model's)")
    shift: float | None = _opt(None, "flow shift of the sampler (default: the model's)")
    sampler: str | None = _opt(None, "default: the model's", choices=SAMPLERS)
    seed: int = _opt(0, f"noise seed, 0..{SEED_MAX}")
    height: int | None = _opt(None, "default: the model's")
    width: int | None = _opt(None, "default: the model's")
    frames: int | None = _opt(None, "frame count, 4n+1 (image models: 1)")
    fps: float | None = _opt(None, "frames per second of the video (default: the model's)")
    dtype: str = _opt("fp32", "DiT weights dtype: fp32|bf16|fp16 (or float32|bfloat16|float16)")
    vae_parallel: str = _opt("exact", "how ranks share the VAE decode (exact: halo exchange, equals one device)",
                             choices=("exact", "tiles", "none"))
    vae_halo: int = _opt(2, "tiles mode: halo in latent rows (>= 0)")
    text_encoder_device: str = _opt("cpu", "where the text encoder runs", choices=("cpu", "device"))
    overwrite: bool = _opt(False, "replace an earlier phyx output at --out (recognised by its sidecar)")
    progress: bool = _opt(True, "hide the progress bar", flag="--no-progress", action="store_false")
    write: bool = _opt(True, "False: return tensors only (tests, benchmarks)", cli=False)


@dataclass(frozen=True)
class Settings:
    """The sampling settings of one run: the command line where given, else the model's defaults."""
    height: int
    width: int
    frames: int
    fps: float
    steps: int
    guidance: float
    guidance_high: float | None
    shift: float
    sampler: str
    negative_prompt: str


@dataclass
class Request:
    """What to run, resolved and (after validate) checked; no model work yet."""
    args: GenerateArgs
    spec: registry.ModelSpec           # with the task's own defaults applied
    task: str
    family: PipelineFamily
    settings: Settings
    dtype: str = "fp32"
    out: Path | None = None
    world: int = 1
    checkpoint: Path | None = None
    camera: tuple | None = None        # (intrinsics [N, 4], poses [N, 4, 4])
    image_frames: object = None        # [F, H, W, 3] uint8
    notes: list = field(default_factory=list)


@dataclass
class RunContext:
    """The run as the stages and a family's Denoiser see it (`run.frames`, `run.vae`, ...)."""
    request: Request
    settings: Settings
    device: torch.device
    dtype: torch.dtype
    rank: int
    timer: Timer
    checkpoint: Path | None = None
    sampler: object = None
    vae: object = None
    model: object = None
    text: torch.Tensor | None = None
    neg_text: torch.Tensor | None = None
    text_device: str = "cpu"
    cond_pixels: torch.Tensor | None = None
    camera_embedding: torch.Tensor | None = None
    latent_shape: tuple = ()
    denoiser: Denoiser | None = None
    latents: torch.Tensor | None = None
    step_s: list = field(default_factory=list)
    video: torch.Tensor | None = None
    decode_info: dict = field(default_factory=dict)

    # the Denoisers' view: spec / task / prompt from the request, sampling values from settings
    spec = property(lambda self: self.request.spec)
    task = property(lambda self: self.request.task)
    seed = property(lambda self: self.request.args.seed)
    prompt = property(lambda self: self.request.args.prompt)
    notes = property(lambda self: self.request.notes)
    height = property(lambda self: self.settings.height)
    width = property(lambda self: self.settings.width)
    frames = property(lambda self: self.settings.frames)
    fps = property(lambda self: self.settings.fps)
    steps = property(lambda self: self.settings.steps)
    guidance = property(lambda self: self.settings.guidance)
    guidance_high = property(lambda self: self.settings.guidance_high)
    shift = property(lambda self: self.settings.shift)
    negative_prompt = property(lambda self: self.settings.negative_prompt)


# ---- resolve ------------------------------------------------------------------------------------

def resolve_spec(name: str) -> registry.ModelSpec:
    try:
        return registry.get_spec(name)
    except KeyError:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(registry.names())}") from None


def resolve_task(spec, args) -> str:
    if args.task:
        task = args.task
    elif args.sound:
        task = "t2av"
    elif args.image is not None:
        task = next((t for t in spec.tasks if t in ("i2v", "v2w")), spec.default_task())
    else:
        task = spec.default_task()
    if args.sound and (task != "t2av" or "t2av" not in spec.tasks):
        raise InputError(f"--sound needs a text-to-audio+video model (cosmos3-nano, task t2av); "
                         f"{spec.name} does {', '.join(spec.tasks)}")
    if task not in spec.tasks:
        raise InputError(f"model {spec.name} does not do {task}; it does {', '.join(spec.tasks)}")
    return task


def _given(v, default):
    return default if v is None else v


def resolve_settings(spec: registry.ModelSpec, task: str, args: GenerateArgs) -> Settings:
    """Settings for `task` (spec's per-task defaults applied); loads nothing. A value given on the
    command line is kept as given (0 stays 0, for validate to refuse)."""
    spec = spec.for_task(task)
    guidance = _given(args.guidance, spec.guidance)
    # one --guidance sets both experts unless --guidance-high is given too
    guidance_high = args.guidance_high if args.guidance_high is not None else (
        guidance if args.guidance is not None and spec.guidance_high is not None else spec.guidance_high)
    return Settings(height=_given(args.height, spec.height), width=_given(args.width, spec.width),
                    frames=_given(args.frames, 1 if task == "t2i" else spec.frames),
                    fps=_given(args.fps, spec.fps), steps=_given(args.steps, spec.steps), guidance=guidance,
                    guidance_high=guidance_high, shift=_given(args.shift, spec.shift),
                    sampler=args.sampler or spec.sampler,
                    negative_prompt=_given(args.negative_prompt, spec.negative_prompt))


def resolve(args: GenerateArgs) -> Request:
    from phyx.pipelines.families import family

    spec = resolve_spec(args.model)
    task = resolve_task(spec, args)
    spec = spec.for_task(task)
    return Request(args=args, spec=spec, task=task, family=family(spec.family),
                   settings=resolve_settings(spec, task, args),
                   dtype=DTYPE_ALIASES.get(str(args.dtype).lower(), str(args.dtype)))


# ---- validate -----------------------------------------------------------------------------------

def check_steps(sampler: str, steps: int, shift: float) -> None:
    """Refuse a step count the sampler cannot take: UniPC's flow schedule collapses to duplicate
    timesteps at high step counts (the run would fail at its end)."""
    from phyx.pipelines import schedulers

    validate.check_int("steps", steps, 1, MAX_STEPS)
    if sampler != "unipc":
        return

    def distinct(n):
        return len(set(schedulers.make_sampler(sampler, n, shift).timesteps.tolist())) == n

    if distinct(steps):
        return
    lo, hi = 1, steps  # largest n with distinct timesteps (monotone in practice)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if distinct(mid) else (lo, mid)
    raise InputError(f"--steps {steps}: the unipc sampler at shift {shift:g} repeats timesteps beyond {lo} "
                     f"steps (the run would fail at its end); use --steps {lo} or fewer, or --sampler euler")

def _check_values(req: Request) -> None:
    a, st, spec = req.args, req.settings, req.spec
    validate.check_choice("dtype", req.dtype, DTYPES)
    validate.check_choice("sampler", st.sampler, SAMPLERS)
    validate.check_choice("vae-parallel", a.vae_parallel, ("exact", "tiles", "none"))
    validate.check_choice("text-encoder-device", a.text_encoder_device, ("cpu", "device"))
    validate.check_choice("policy", a.policy, ("reference", "fast"))
    validate.check_int("seed", a.seed, 0, SEED_MAX)
    validate.check_int("vae-halo", a.vae_halo, 0)
    for name in ("height", "width", "frames"):
        validate.check_int(name, getattr(st, name), 1)
    validate.check_finite("fps", st.fps, positive=True)
    validate.check_finite("guidance", st.guidance)
    validate.check_finite("guidance-high", st.guidance_high)
    validate.check_finite("shift", st.shift, positive=True)
    if a.guidance_high is not None and spec.guidance_high is None:
        raise InputError(f"--guidance-high is for models with a high-noise expert (A14B, lingbot-world); "
                         f"{spec.name} has one DiT: use --guidance")
    check_steps(st.sampler, st.steps, st.shift)


def _check_memory(req: Request) -> None:
    st = req.settings
    need = 3 * st.frames * st.height * st.width * (4 + 1)   # the decoded video in float32 + uint8
    total = _host_memory()
    if total and need > total:
        raise InputError(f"{st.frames} frames of {st.height}x{st.width} need about {need / 2**30:.1f} GiB for "
                         f"the decoded video alone, more than this machine's {total / 2**30:.1f} GiB; "
                         f"use fewer frames or a smaller size")


def _host_memory() -> int | None:
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_inputs(req: Request) -> Request:
    a, spec, st = req.args, req.spec, req.settings
    validate.check_image_input(req.task, a.image, allow_default=spec.tiny)
    if spec.camera:
        if a.camera:
            req.camera = inputs.load_camera(a.camera)
        elif spec.tiny:
            req.camera = inputs.synthetic_camera(st.frames)
            req.notes.append("camera: synthetic forward dolly (no --camera given)")
        else:
            raise InputError(f"{spec.name} is camera-controlled: pass --camera DIR with intrinsics.npy [N, 4] "
                             f"and poses.npy [N, 4, 4]")
        from phyx.models.wan.camera import capped_frame_num
        capped = capped_frame_num(req.camera[1].shape[0], st.frames)
        if capped != st.frames:
            req.notes.append(f"frames: {st.frames} -> {capped} (the camera trajectory has "
                             f"{req.camera[1].shape[0]} poses)")
            req.settings = dataclasses.replace(st, frames=capped)
    elif a.camera:
        raise InputError(f"--camera given but {spec.name} has no camera control (lingbot-world has)")
    req.image_frames = inputs.load_frames(a.image) if a.image else None
    if a.checkpoint:
        req.checkpoint = Path(a.checkpoint)
        if not req.checkpoint.is_dir():
            raise CheckpointError(f"--checkpoint {req.checkpoint} is not a directory")
        validate.check_checkpoint(req.family.required_parts(req.checkpoint, spec))
    elif not spec.tiny:
        raise CheckpointError(f"{spec.name} needs --checkpoint DIR (the tiny-* models build their own)")
    return req


def output_targets(req: Request) -> list[Path]:
    from phyx.pipelines.sidecar import sidecar_path

    out = req.out
    return [out, sidecar_path(out)] + ([out.with_suffix(".wav")] if req.task == "t2av" else [])


def _check_outputs(req: Request) -> None:
    st = req.settings
    req.out = validate.check_output(req.args.out, req.task)
    validate.check_writable(req.out, need_bytes=64 * 1024 + st.frames * st.height * st.width * 3 // 50)
    validate.check_targets(req.out, output_targets(req), req.args.overwrite)
    validate.check_writer(req.out)


def validate_request(req: Request) -> Request:
    """Every check that needs no model, before any model work; returns the checked request."""
    _check_values(req)
    st = req.settings
    req.world = validate.check_world(req.args.cfg, req.args.sp, req.args.tp, req.args.ring)
    t_stride, s_stride = VAE_STRIDES[req.spec.vae]
    validate.check_frames(st.frames, t_stride, req.task)
    validate.check_size(st.height, st.width, s_stride, req.family.PATCH)
    _check_memory(req)
    req = _check_inputs(req)
    if req.args.write:
        _check_outputs(req)
    return req


# ---- stages with model work ---------------------------------------------------------------------

def select_backend(req: Request) -> RunContext:
    import phyx
    from phyx import device as phyx_device
    from phyx.parallel import ParallelConfig, init_parallel

    a = req.args
    if a.backend:
        phyx.set_backend(a.backend, a.policy, _reason=f"phyx generate --backend {a.backend}")
    elif a.policy:
        phyx.get_backend()
        phyx.set_policy(a.policy)
    if req.world > 1:
        init_parallel(ParallelConfig(cfg=a.cfg, sp=a.sp, tp=a.tp, ring=a.ring))
    return RunContext(request=req, settings=req.settings, device=phyx_device.torch_device(),
                      dtype=DTYPES[req.dtype], rank=_dist.rank(), timer=Timer(), checkpoint=req.checkpoint)


def prepare_checkpoint(ctx: RunContext) -> None:
    req = ctx.request
    with ctx.timer("checkpoint_s"):
        if ctx.checkpoint is None:
            from phyx.pipelines import tiny
            if ctx.rank == 0:
                ctx.checkpoint = tiny.ensure(req.spec.tiny_recipe)
            _dist.barrier()
            if ctx.rank != 0:
                ctx.checkpoint = tiny.ensure(req.spec.tiny_recipe)
    if req.args.shift is None:
        shift = req.family.checkpoint_shift(ctx.checkpoint)
        if shift is not None and shift != ctx.settings.shift:
            req.notes.append(f"shift: {ctx.settings.shift} -> {shift} (the checkpoint's scheduler config)")
            ctx.settings = dataclasses.replace(ctx.settings, shift=shift)


def encode_text(ctx: RunContext) -> None:
    from phyx.pipelines import text as text_mod

    spec = ctx.spec
    with ctx.timer("text_s"):
        enc_device = torch.device("cpu") if ctx.request.args.text_encoder_device == "cpu" else ctx.device
        ctx.text_device = str(enc_device)
        if spec.text_encoder == "tokens":
            return  # Cosmos3 tokenises inside its family module
        tok = text_mod.load_tokenizer(ctx.checkpoint / "tokenizer")
        enc = text_mod.load_text_encoder(spec.text_encoder, ctx.checkpoint / "text_encoder", device=enc_device)
        emb, _ = text_mod.encode(enc, tok, [ctx.prompt, ctx.negative_prompt], spec.text_len)
        ctx.text, ctx.neg_text = emb[:1], emb[1:]


def load_models(ctx: RunContext) -> None:
    from phyx.pipelines import vae as vae_mod

    spec = ctx.spec
    with ctx.timer("load_s"):
        ctx.vae = vae_mod.load_vae(ctx.checkpoint / "vae", device=ctx.device)
        got, want = vae_mod.strides(ctx.vae), VAE_STRIDES[spec.vae]
        if tuple(got) != want:
            raise CheckpointError(f"the VAE in {ctx.checkpoint / 'vae'} compresses by {got[0]}x{got[1]}, but "
                                  f"{spec.name} expects the {spec.vae} VAE ({want[0]}x{want[1]})")
        ctx.model = ctx.request.family.load_dit(ctx.checkpoint, spec, ctx.dtype, ctx.device)


def build_conditioning(ctx: RunContext) -> None:
    from phyx.pipelines import schedulers

    req, st = ctx.request, ctx.settings
    t_stride, s_stride = VAE_STRIDES[ctx.spec.vae]
    with ctx.timer("conditioning_s"):
        ctx.sampler = schedulers.make_sampler(st.sampler, st.steps, st.shift)
        ctx.latent_shape = (1, ctx.vae.config.z_dim, (st.frames - 1) // t_stride + 1, st.height // s_stride,
                            st.width // s_stride)
        if req.task in ("i2v", "v2w"):
            frames = req.image_frames
            if frames is None:
                frames = inputs.synthetic_image(st.height, st.width)
                req.notes.append("image: synthetic first frame (no --image given)")
            ctx.cond_pixels = inputs.to_pixels(frames, st.height, st.width)
        if req.camera is not None:
            from phyx.models.wan.camera import prepare_camera
            ctx.camera_embedding = prepare_camera(req.camera[0], req.camera[1], st.height, st.width, st.frames,
                                                  vae_stride=(t_stride, s_stride, s_stride)).embedding
        with torch.no_grad():
            ctx.denoiser = req.family.make_denoiser(ctx, ctx.model)


def denoise(ctx: RunContext, denoiser: Denoiser | None = None) -> torch.Tensor:
    import time

    from tqdm.auto import tqdm

    from phyx import device as phyx_device
    from phyx.pipelines import noise as noise_mod

    den = denoiser or ctx.denoiser
    noise = noise_mod.cpu_noise(ctx.latent_shape, ctx.seed, device=ctx.device)
    with torch.no_grad(), ctx.timer("denoise_s"):
        x = den.init_latents(noise)
        bar = tqdm(range(ctx.steps), desc=f"{ctx.spec.name} {ctx.task}", unit="step",
                   disable=not ctx.request.args.progress or ctx.rank != 0, file=sys.stderr)
        for i in bar:
            t0 = time.perf_counter()
            x = den.step(den.predict(x, i), i, x)
            phyx_device.synchronize()
            ctx.step_s.append(time.perf_counter() - t0)
        ctx.latents = den.final(x).float()
    if not torch.isfinite(ctx.latents).all():
        raise RuntimeError("the denoised latents contain NaN/Inf; try --dtype fp32 or --policy reference")
    return ctx.latents


def decode(ctx: RunContext) -> torch.Tensor:
    from phyx import device as phyx_device
    from phyx.pipelines import vae as vae_mod
    from phyx.pipelines import vae_parallel

    a = ctx.request.args
    with ctx.timer("decode_s"):
        video, ctx.decode_info = vae_parallel.decode(ctx.vae, vae_mod.denormalize(ctx.vae, ctx.latents),
                                                     a.vae_parallel, a.vae_halo)
        phyx_device.synchronize()
    ctx.video = video[0].float().cpu()  # [3, F, H, W]
    return ctx.video


@dataclass
class RunRecord:
    """What the sidecar says about a run; `record` is its JSON form."""
    record: dict
    extra: dict = field(default_factory=dict)
    out: Path | None = None
    sidecar: Path | None = None
    wav_path: Path | None = None

    @classmethod
    def from_context(cls, ctx: RunContext, extra: dict) -> "RunRecord":
        req, st, a = ctx.request, ctx.settings, ctx.request.args
        settings = dataclasses.asdict(st)
        negative_prompt = settings.pop("negative_prompt")
        settings.update(sampler=ctx.sampler.describe(), seed=a.seed, dtype=req.dtype,
                        text_encoder_device=ctx.text_device, vae_parallel=a.vae_parallel, vae_halo=a.vae_halo,
                        image=a.image, camera=a.camera)
        rec = {"model": req.spec.name, "family": req.spec.family, "task": req.task,
               "checkpoint": str(ctx.checkpoint), "tiny": req.spec.tiny, "prompt": a.prompt,
               "negative_prompt": negative_prompt, "settings": settings, "args": dataclasses.asdict(a),
               "parallel": {"world_size": req.world, "cfg": a.cfg, "sp": a.sp, "ring": a.ring, "tp": a.tp,
                            "rank": ctx.rank},
               "latent_shape": list(ctx.latent_shape), "denoiser": ctx.denoiser.describe(),
               "vae_decode": ctx.decode_info, "notes": req.notes,
               "timings": {**ctx.timer.seconds, "step_s": ctx.step_s},
               "noise": "torch.Generator('cpu').manual_seed(seed), float32, then moved to the device"}
        return cls(record=rec, extra=extra)

    def result(self, ctx: RunContext) -> dict:
        """The dict generate() returns (tensors + record + written paths)."""
        return {"latents": ctx.latents.cpu(), "video": ctx.video, "record": self.record, "out": self.out,
                "sidecar": self.sidecar, "wav": self.extra.get("wav"),
                **({"wav_path": self.wav_path} if self.wav_path else {})}


def _timings(ctx: RunContext) -> dict:
    return {**ctx.timer.seconds, "step_s": ctx.step_s, "total_s": ctx.timer.total()}


def write_outputs(ctx: RunContext) -> RunRecord:
    run = RunRecord.from_context(ctx, ctx.denoiser.extra_outputs())
    rec, req = run.record, ctx.request
    if req.args.write:
        from phyx.pipelines import media, sidecar
        if ctx.rank == 0:
            with ctx.timer("write_s"):
                frames_u8 = media.to_uint8_frames(ctx.video)
                if req.task == "t2i" and req.out.suffix.lower() != ".mp4":
                    media.write_image(frames_u8[0], req.out)
                else:
                    media.write_video(frames_u8, req.out, ctx.fps)
                if "wav" in run.extra:
                    wav, rate = run.extra["wav"]
                    run.wav_path = media.write_wav(wav, req.out.with_suffix(".wav"), rate)
                    rec["sound"] = {"path": str(run.wav_path), "sample_rate": rate, "samples": int(wav.shape[-1])}
                rec["output"] = {"path": str(req.out), "frames": int(frames_u8.shape[0]),
                                 "sha256_frames": sidecar.sha256_of(frames_u8),
                                 "sha256_latents": sidecar.sha256_of(ctx.latents.cpu().numpy())}
                rec["versions"] = sidecar.versions()
                rec["backend"] = sidecar.backend_record()
            rec["timings"] = _timings(ctx)
            run.sidecar = sidecar.write_sidecar(req.out, rec)
            run.out = req.out
        _dist.barrier()
    if "total_s" not in rec["timings"]:
        rec["timings"] = _timings(ctx)
    return run


STAGES = (prepare_checkpoint, encode_text, load_models, build_conditioning, denoise, decode)


def generate(args: GenerateArgs) -> dict:
    """Run every stage; returns {latents, video, record, out, sidecar, wav[, wav_path]}."""
    req = validate_request(resolve(args))
    ctx = select_backend(req)
    for stage in STAGES:
        stage(ctx)
    return write_outputs(ctx).result(ctx)
