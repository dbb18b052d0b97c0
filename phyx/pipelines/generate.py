"""`phyx generate` as a function: resolve the model and settings, refuse bad input before any
model work, then text -> noise (CPU, seeded) -> guided denoising -> parallel VAE decode -> mp4 /
png (+ wav) and a JSON sidecar, written by rank 0.

    from phyx.pipelines import GenerateArgs, generate
    result = generate(GenerateArgs(model="tiny-wan", out="out/tiny.mp4"))
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from phyx.errors import CheckpointError
from phyx.pipelines import _dist, inputs, registry, validate
from phyx.pipelines.inputs import InputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
VAE_STRIDES = {"wan2.1": (4, 8), "wan2.2": (4, 16)}   # (temporal, spatial)
DEFAULT_PROMPT = "a red ball rolls across a wooden floor, soft daylight"


@dataclass
class GenerateArgs:
    model: str = "tiny-wan"
    out: str = "out/video.mp4"
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str | None = None   # None: the model's upstream default (registry.ModelSpec)
    checkpoint: str | None = None
    task: str | None = None
    image: str | None = None
    camera: str | None = None
    sound: bool = False
    backend: str | None = None
    policy: str | None = None
    cfg: int = 1
    sp: int = 1
    tp: int = 1
    steps: int | None = None
    guidance: float | None = None
    guidance_high: float | None = None
    shift: float | None = None
    sampler: str | None = None
    seed: int = 0
    height: int | None = None
    width: int | None = None
    frames: int | None = None
    fps: float | None = None
    dtype: str = "float32"
    vae_parallel: str = "exact"
    vae_halo: int = 2
    text_encoder_device: str = "cpu"
    progress: bool = True
    write: bool = True   # False: return tensors only (tests, benchmarks)


@dataclass
class Run:
    """Everything a family's Denoiser needs, resolved."""
    spec: registry.ModelSpec
    task: str
    checkpoint: Path
    device: torch.device
    dtype: torch.dtype
    height: int
    width: int
    frames: int
    fps: float
    steps: int
    guidance: float
    guidance_high: float | None
    shift: float
    seed: int
    sampler: object = None
    vae: object = None
    text: torch.Tensor | None = None
    neg_text: torch.Tensor | None = None
    cond_pixels: torch.Tensor | None = None
    camera_embedding: torch.Tensor | None = None
    latent_shape: tuple = ()
    prompt: str = ""
    negative_prompt: str = ""
    notes: list = field(default_factory=list)


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


def resolve_settings(spec: registry.ModelSpec, task: str, args: GenerateArgs) -> Settings:
    """Settings for `task` (spec's per-task defaults applied); loads nothing."""
    spec = spec.for_task(task)
    guidance = spec.guidance if args.guidance is None else args.guidance
    # one --guidance sets both experts unless --guidance-high is given too
    guidance_high = args.guidance_high if args.guidance_high is not None else (
        guidance if args.guidance is not None and spec.guidance_high is not None else spec.guidance_high)
    return Settings(height=args.height or spec.height, width=args.width or spec.width,
                    frames=1 if task == "t2i" else (args.frames or spec.frames), fps=args.fps or spec.fps,
                    steps=spec.steps if args.steps is None else args.steps, guidance=guidance,
                    guidance_high=guidance_high, shift=spec.shift if args.shift is None else args.shift,
                    sampler=args.sampler or spec.sampler,
                    negative_prompt=spec.negative_prompt if args.negative_prompt is None else args.negative_prompt)


def _rank0_print(msg: str) -> None:
    if _dist.rank() == 0:
        print(msg, file=sys.stderr, flush=True)


def generate(args: GenerateArgs) -> dict:
    from phyx.pipelines.families import family_module

    t_start = time.perf_counter()
    times: dict[str, float] = {}
    spec = resolve_spec(args.model)
    task = resolve_task(spec, args)
    fam = family_module(spec.family)

    # ---- settings and every check that needs no model -------------------------------------
    spec = spec.for_task(task)
    st = resolve_settings(spec, task, args)
    height, width, frames, fps = st.height, st.width, st.frames, st.fps
    steps, guidance, guidance_high, shift = st.steps, st.guidance, st.guidance_high, st.shift
    sampler_kind, negative_prompt = st.sampler, st.negative_prompt
    if args.dtype not in DTYPES:
        raise InputError(f"--dtype must be one of {sorted(DTYPES)}, got {args.dtype!r}")
    if steps < 1:
        raise InputError(f"--steps must be >= 1, got {steps}")
    if not shift > 0:
        raise InputError(f"--shift must be a positive number, got {shift}")
    world = validate.check_world(args.cfg, args.sp, args.tp)
    out = validate.check_output(args.out, task)
    validate.check_image_input(task, args.image, allow_default=spec.tiny)
    t_stride, s_stride = VAE_STRIDES[spec.vae]
    validate.check_frames(frames, t_stride, task)
    validate.check_size(height, width, s_stride, fam.PATCH)
    if args.vae_parallel not in ("exact", "tiles", "none"):
        raise InputError(f"--vae-parallel must be exact, tiles or none, got {args.vae_parallel!r}")
    notes = []
    camera = None
    if spec.camera:
        if args.camera:
            camera = inputs.load_camera(args.camera)
        elif spec.tiny:
            camera = inputs.synthetic_camera(frames)
            notes.append("camera: synthetic forward dolly (no --camera given)")
        else:
            raise InputError(f"{spec.name} is camera-controlled: pass --camera DIR with intrinsics.npy [N, 4] "
                             f"and poses.npy [N, 4, 4]")
        from phyx.models.wan.camera import capped_frame_num
        capped = capped_frame_num(camera[1].shape[0], frames)
        if capped != frames:
            notes.append(f"frames: {frames} -> {capped} (the camera trajectory has {camera[1].shape[0]} poses)")
            frames = capped
    elif args.camera:
        raise InputError(f"--camera given but {spec.name} has no camera control (lingbot-world has)")
    image_frames = inputs.load_frames(args.image) if args.image else None
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        if not ckpt.is_dir():
            raise CheckpointError(f"--checkpoint {ckpt} is not a directory")
        validate.check_checkpoint(fam.required_parts(ckpt, spec))
    elif not spec.tiny:
        raise CheckpointError(f"{spec.name} needs --checkpoint DIR (the tiny-* models build their own)")
    else:
        ckpt = None

    # ---- backend, parallel layout ---------------------------------------------------------
    import phyx
    from phyx import device as phyx_device
    from phyx.parallel import ParallelConfig, init_parallel

    if args.backend:
        phyx.set_backend(args.backend, args.policy, _reason=f"phyx generate --backend {args.backend}")
    elif args.policy:
        phyx.get_backend()
        phyx.set_policy(args.policy)
    state = init_parallel(ParallelConfig(cfg=args.cfg, sp=args.sp, tp=args.tp)) if world > 1 else None  # noqa: F841
    rank = _dist.rank()
    device = phyx_device.torch_device()
    dtype = DTYPES[args.dtype]

    # ---- checkpoint (tiny: built once into the cache, rank 0 first) ------------------------
    t0 = time.perf_counter()
    if ckpt is None:
        from phyx.pipelines import tiny
        if rank == 0:
            ckpt = tiny.ensure(spec.tiny_recipe)
        _dist.barrier()
        if rank != 0:
            ckpt = tiny.ensure(spec.tiny_recipe)
    times["checkpoint_s"] = time.perf_counter() - t0
    if args.shift is None and hasattr(fam, "checkpoint_shift"):
        ckpt_shift = fam.checkpoint_shift(ckpt)
        if ckpt_shift is not None and ckpt_shift != shift:
            notes.append(f"shift: {shift} -> {ckpt_shift} (the checkpoint's scheduler config)")
            shift = ckpt_shift

    # ---- text ------------------------------------------------------------------------------
    from phyx.pipelines import text as text_mod
    t0 = time.perf_counter()
    enc_device = torch.device("cpu") if args.text_encoder_device == "cpu" else device
    if spec.text_encoder == "tokens":
        text = neg_text = None  # Cosmos3 tokenises inside its family module
    else:
        tok = text_mod.load_tokenizer(ckpt / "tokenizer")
        enc = text_mod.load_text_encoder(spec.text_encoder, ckpt / "text_encoder", device=enc_device)
        emb, _ = text_mod.encode(enc, tok, [args.prompt, negative_prompt], spec.text_len)
        text, neg_text = emb[:1], emb[1:]
        del enc
    times["text_s"] = time.perf_counter() - t0

    # ---- VAE, DiT, conditioning ------------------------------------------------------------
    from phyx.pipelines import noise as noise_mod
    from phyx.pipelines import schedulers
    from phyx.pipelines import vae as vae_mod
    t0 = time.perf_counter()
    vae = vae_mod.load_vae(ckpt / "vae", device=device)
    t_vae, s_vae = vae_mod.strides(vae)
    if (t_vae, s_vae) != (t_stride, s_stride):
        raise CheckpointError(f"the VAE in {ckpt / 'vae'} compresses by {t_vae}x{s_vae}, but {spec.name} "
                              f"expects the {spec.vae} VAE ({t_stride}x{s_stride})")
    model = fam.load_dit(ckpt, spec, dtype, device)
    times["load_s"] = time.perf_counter() - t0

    run = Run(spec=spec, task=task, checkpoint=ckpt, device=device, dtype=dtype, height=height, width=width,
              frames=frames, fps=fps, steps=steps, guidance=guidance, guidance_high=guidance_high,
              shift=shift, seed=args.seed, notes=notes, prompt=args.prompt,
              negative_prompt=negative_prompt)
    run.vae, run.text, run.neg_text = vae, text, neg_text
    run.sampler = schedulers.make_sampler(sampler_kind, steps, shift)
    run.latent_shape = (1, vae.config.z_dim, (frames - 1) // t_stride + 1, height // s_stride, width // s_stride)
    if task in ("i2v", "v2w"):
        if image_frames is None:
            image_frames = inputs.synthetic_image(height, width)
            notes.append("image: synthetic first frame (no --image given)")
        run.cond_pixels = inputs.to_pixels(image_frames, height, width)
    if camera is not None:
        from phyx.models.wan.camera import prepare_camera
        run.camera_embedding = prepare_camera(camera[0], camera[1], height, width, frames,
                                              vae_stride=(t_stride, s_stride, s_stride)).embedding
    t0 = time.perf_counter()
    with torch.no_grad():
        den = fam.Denoiser(run, model)
    times["conditioning_s"] = time.perf_counter() - t0

    # ---- denoise ---------------------------------------------------------------------------
    from tqdm.auto import tqdm
    noise = noise_mod.cpu_noise(run.latent_shape, args.seed, device=device)
    step_s = []
    with torch.no_grad():
        x = den.init_latents(noise)
        bar = tqdm(range(steps), desc=f"{spec.name} {task}", unit="step",
                   disable=not args.progress or rank != 0, file=sys.stderr)
        for i in bar:
            ts = time.perf_counter()
            pred = den.predict(x, i)
            x = den.step(pred, i, x)
            phyx_device.synchronize()
            step_s.append(time.perf_counter() - ts)
        latents = den.final(x).float()
    times["denoise_s"] = sum(step_s)
    if not torch.isfinite(latents).all():
        raise RuntimeError("the denoised latents contain NaN/Inf; try --dtype float32 or --policy reference")

    # ---- decode (all ranks), write (rank 0) ------------------------------------------------
    from phyx.pipelines import vae_parallel
    t0 = time.perf_counter()
    video, decode_info = vae_parallel.decode(vae, vae_mod.denormalize(vae, latents), args.vae_parallel,
                                             args.vae_halo)
    phyx_device.synchronize()
    times["decode_s"] = time.perf_counter() - t0
    video = video[0].float().cpu()  # [3, F, H, W]
    extra = den.extra_outputs() if hasattr(den, "extra_outputs") else {}

    record = {
        "model": spec.name, "family": spec.family, "task": task, "checkpoint": str(ckpt),
        "tiny": spec.tiny, "prompt": args.prompt, "negative_prompt": negative_prompt,
        "settings": {"height": height, "width": width, "frames": frames, "fps": fps, "steps": steps,
                     "guidance": guidance, "guidance_high": guidance_high, "shift": shift,
                     "sampler": run.sampler.describe(), "seed": args.seed, "dtype": args.dtype,
                     "text_encoder_device": str(enc_device), "vae_parallel": args.vae_parallel,
                     "vae_halo": args.vae_halo, "image": args.image, "camera": args.camera},
        "args": dataclasses.asdict(args),
        "parallel": {"world_size": world, "cfg": args.cfg, "sp": args.sp, "tp": args.tp, "rank": rank},
        "latent_shape": list(run.latent_shape),
        "denoiser": den.describe(),
        "vae_decode": decode_info,
        "notes": notes,
        "timings": {**times, "step_s": step_s},
        "noise": "torch.Generator('cpu').manual_seed(seed), float32, then moved to the device",
    }
    result = {"latents": latents.cpu(), "video": video, "record": record, "out": None, "sidecar": None,
              "wav": extra.get("wav")}
    if args.write:
        from phyx.pipelines import media, sidecar
        t0 = time.perf_counter()
        if rank == 0:
            frames_u8 = media.to_uint8_frames(video)
            if task == "t2i" and out.suffix.lower() != ".mp4":
                media.write_image(frames_u8[0], out)
            else:
                media.write_video(frames_u8, out, fps)
            if "wav" in extra:
                wav_path = media.write_wav(extra["wav"][0], out.with_suffix(".wav"), extra["wav"][1])
                record["sound"] = {"path": str(wav_path), "sample_rate": extra["wav"][1],
                                   "samples": int(extra["wav"][0].shape[-1])}
                result["wav_path"] = wav_path
            record["output"] = {"path": str(out), "frames": int(frames_u8.shape[0]),
                                "sha256_frames": sidecar.sha256_of(frames_u8),
                                "sha256_latents": sidecar.sha256_of(latents.cpu().numpy())}
            record["versions"] = sidecar.versions()
            record["backend"] = sidecar.backend_record()
            times["write_s"] = time.perf_counter() - t0
            record["timings"]["total_s"] = time.perf_counter() - t_start
            result["sidecar"] = sidecar.write_sidecar(out, record)
            result["out"] = out
        _dist.barrier()
    record["timings"].setdefault("total_s", time.perf_counter() - t_start)
    return result
