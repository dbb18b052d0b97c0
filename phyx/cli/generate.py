"""`phyx generate`: one command for every model, task, backend and parallel layout.

    phyx generate --model tiny-wan --out out/tiny.mp4
    torchrun --nproc_per_node 2 -m phyx.cli generate --model tiny-wan --cfg 2 --out out/cfg2.mp4
"""
from __future__ import annotations

import argparse
import json
import sys


def _quiet_libraries() -> None:
    """transformers / diffusers progress bars and hints are noise next to our own bar."""
    import warnings

    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:
        pass
    try:
        import diffusers

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
    except Exception:
        pass
    warnings.filterwarnings("ignore", message=".*low_cpu_mem_usage.*")
    warnings.filterwarnings("ignore", message=".*weight_norm.*is deprecated.*")


def _cmd_generate(args) -> int:
    from phyx.pipelines import registry
    from phyx.pipelines.generate import GenerateArgs, generate

    if args.list_models:
        for name in registry.names():
            s = registry.SPECS[name]
            print(f"{name:<26} {'/'.join(s.tasks):<10} {s.description}")
        return 0
    _quiet_libraries()
    fields = {f for f in GenerateArgs.__dataclass_fields__}
    kw = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    kw["progress"] = not args.no_progress
    try:
        result = generate(GenerateArgs(**kw))
    finally:
        # Under torchrun: tear the process group down before the interpreter exits; left to the
        # exit handlers, its threads were occasionally destroyed while joinable (SIGABRT).
        from phyx import comm
        comm.destroy()
    if result["out"] is not None:
        rec = result["record"]
        t = rec["timings"]
        print(f"wrote {result['out']} ({rec['settings']['frames']} frames {rec['settings']['height']}x"
              f"{rec['settings']['width']}, {rec['task']}, backend {rec['backend']['name']}, "
              f"{t['total_s']:.1f} s) and {result['sidecar']}")
        if args.json:
            print(json.dumps(rec, indent=2, default=str))
    return 0


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate a video / image (+ sound) with a world model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-wan", help="model name (see --list-models); default tiny-wan")
    p.add_argument("--checkpoint", help="checkpoint directory (transformer/, vae/, text_encoder/, "
                                        "tokenizer/); tiny-* models build their own when omitted")
    p.add_argument("--prompt", help="text prompt")
    p.add_argument("--negative-prompt", dest="negative_prompt",
                   help="default: the model's upstream negative prompt (Wan2.2 / LingBot-World configs, "
                        "diffusers' Cosmos pipelines); \"\" for none")
    p.add_argument("--task", choices=["t2v", "i2v", "t2i", "v2w", "t2av"],
                   help="default: the model's first task, i2v/v2w with --image, t2av with --sound")
    p.add_argument("--image", help="conditioning image (or video for v2w)")
    p.add_argument("--camera", help="LingBot-World camera directory (intrinsics.npy [N,4], poses.npy [N,4,4])")
    p.add_argument("--sound", action="store_true", help="also generate sound (cosmos3 t2av), written as .wav")
    p.add_argument("--backend", help="phyx backend (cpu, cuda, npu, npu-emulated); default: autodetect")
    p.add_argument("--policy", choices=["reference", "fast"], help="kernel policy")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--sp", type=int, default=1)
    p.add_argument("--cfg", type=int, default=1, choices=[1, 2])
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--guidance-high", dest="guidance_high", type=float,
                   help="A14B: guidance of the high-noise expert (default: the model's)")
    p.add_argument("--shift", type=float, help="flow shift of the sampler")
    p.add_argument("--sampler", choices=["unipc", "euler", "cosmos-rf"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--frames", type=int, help="frame count, 4n+1")
    p.add_argument("--fps", type=float)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="DiT weights dtype")
    p.add_argument("--vae-parallel", dest="vae_parallel", choices=["exact", "tiles", "none"], default="exact",
                   help="how ranks share the VAE decode (exact: halo exchange, equals one device)")
    p.add_argument("--vae-halo", dest="vae_halo", type=int, default=2, help="tiles mode: halo in latent rows")
    p.add_argument("--text-encoder-device", dest="text_encoder_device", choices=["cpu", "device"],
                   default="cpu")
    p.add_argument("--out", default="out/video.mp4", help="output .mp4 (or .png for t2i)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the sidecar record")
    p.add_argument("--list-models", action="store_true", help="list model names and exit")
    p.set_defaults(func=_cmd_generate)


if __name__ == "__main__":
    from phyx.cli import main

    sys.exit(main(["generate", *sys.argv[1:]]))
