"""Model-step benchmarks: one DiT forward (and forward + backward, the training path) at real
sizes with random bf16 weights, through phyx's model and through diffusers' transformer with the
same config and input shapes in the same run. ms per step, MFU (FLOPs counted by
torch.utils.flop_counter on one step, over the matmul peak measured in the same run), peak
device memory. A model whose phyx package is not there yet is recorded as skipped.

Weights are random, drawn independently for each implementation: step time does not depend on
the values. Numerical agreement of the two implementations is the parity suite's job.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import os

import torch

import phyx
from phyx.tools.bench.timing import time_call

# name: latent [C, F, H, W], text tokens, what
WAN_LATENT_480P_81F = (16, 21, 60, 104)      # 480x832, 81 frames -> 21 x 60 x 104 latent
PREDICT2_LATENT_720P_93F = (16, 24, 88, 160)  # 704x1280, 93 frames -> 24 x 88 x 160 latent


def _dev():
    from phyx.device import torch_device

    return torch_device()


@contextlib.contextmanager
def _default_dtype(dtype):
    """Build modules directly in bf16 on the device: a 14B model never exists in fp32."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(_dev()):
            yield
    finally:
        torch.set_default_dtype(prev)


def _randomise(model, std=0.02):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or name.endswith("weight")):
                p.fill_(1.0)
            else:
                p.normal_(0.0, std)
    return model


# ------------------------------------------------------------------ model specs
def _with_layers(cfg, field, layers):
    """The same config with its first `layers` blocks only (profiling and short GPU leases)."""
    if layers is None:
        return cfg
    full = getattr(cfg, field)
    if not 1 <= layers <= full:
        raise ValueError(f"layers must be in 1..{full} for this model, got {layers}")
    return dataclasses.replace(cfg, **{field: layers})


def _wan(config_name, quick, layers=None):
    from phyx.models.wan import get_config
    from phyx.models.wan.loading import build_empty, config_to_diffusers

    cfg = _with_layers(get_config("tiny-t2v" if quick else config_name), "num_layers", layers)
    lat = (cfg.in_dim, 3, 8, 8) if quick else WAN_LATENT_480P_81F
    text = (cfg.text_len, cfg.text_dim)

    def inputs(dtype):
        dev = _dev()
        return (torch.randn(1, *lat, device=dev, dtype=dtype), torch.tensor([500.0], device=dev),
                torch.randn(1, *text, device=dev, dtype=dtype))

    def build_phyx(dtype):
        m = _randomise(build_empty(cfg, dtype=dtype, device=_dev()))
        return m, lambda m, x, t, c: m(x, t, c)

    def build_diffusers(dtype):
        from diffusers import WanTransformer3DModel

        with _default_dtype(dtype):
            m = _randomise(WanTransformer3DModel(**config_to_diffusers(cfg)))
        return m, lambda m, x, t, c: m(hidden_states=x, timestep=t, encoder_hidden_states=c,
                                       return_dict=False)[0]

    tokens = lat[1] * (lat[2] // 2) * (lat[3] // 2)
    return dict(inputs=inputs, phyx=build_phyx, diffusers=build_diffusers,
                shape={"latent": list(lat), "text": list(text), "tokens": tokens})


def patch_diffusers_cosmos_torchvision() -> None:
    """diffusers' Cosmos transformer resizes its padding mask with torchvision, imported only when
    torchvision is installed (the CPU dev machine has none). Its call is a nearest-neighbour
    resize, which F.interpolate computes the same way; supplied only where torchvision is absent."""
    import types

    import diffusers.models.transformers.transformer_cosmos as tc

    if hasattr(tc, "transforms"):
        return

    def resize(img, size, interpolation=None):
        return torch.nn.functional.interpolate(img, size=list(size), mode="nearest")

    tc.transforms = types.SimpleNamespace(functional=types.SimpleNamespace(resize=resize),
                                          InterpolationMode=types.SimpleNamespace(NEAREST="nearest"))


def _predict2(preset, quick, layers=None):
    from phyx.models.cosmos_predict2 import PRESETS, Predict2DiT, tiny_config

    cfg = _with_layers(tiny_config("text2image") if quick else PRESETS[preset], "num_layers", layers)
    lat = (cfg.in_channels, 3, 8, 8) if quick else PREDICT2_LATENT_720P_93F
    text = (8 if quick else 512, cfg.text_embed_dim)

    def inputs(dtype):
        dev = _dev()
        return (torch.randn(1, *lat, device=dev, dtype=dtype), torch.tensor([0.5], device=dev),
                torch.randn(1, *text, device=dev, dtype=dtype))

    def build_phyx(dtype):
        with _default_dtype(dtype):
            m = _randomise(Predict2DiT(cfg))
        return m, lambda m, x, t, c: m(x, t, c, fps=24.0)

    def build_diffusers(dtype):
        from diffusers import CosmosTransformer3DModel

        patch_diffusers_cosmos_torchvision()
        d = cfg.to_diffusers_dict()
        d.pop("_class_name", None)
        with _default_dtype(dtype):
            m = _randomise(CosmosTransformer3DModel(**d))
        # diffusers' pipeline passes a pixel-sized zero padding mask (8x the latent)
        return m, lambda m, x, t, c: m(hidden_states=x, timestep=t, encoder_hidden_states=c, fps=24,
                                       padding_mask=x.new_zeros(1, 1, x.shape[-2] * 8, x.shape[-1] * 8),
                                       return_dict=False)[0]

    tokens = lat[1] * (lat[2] // 2) * (lat[3] // 2)
    return dict(inputs=inputs, phyx=build_phyx, diffusers=build_diffusers,
                shape={"latent": list(lat), "text": list(text), "tokens": tokens},
                note="Video2World adds a condition channel inside the model" if "Video" in preset else "")


def _cosmos3_diffusers_kwargs(cfg, ids, vis, t, fps=24.0) -> dict:
    """diffusers' packed inputs for phyx's default step: one sample, [text | vision], every
    vision frame noisy, the pipeline's mRoPE ids (fps-modulated), one timestep per token."""
    from phyx.models.cosmos3 import SequenceLayout, position_ids

    dev, U = vis.device, int(ids.shape[0])
    C, T, H, W = vis.shape
    p = cfg.latent_patch_size
    grid = (T, -(-H // p), -(-W // p))
    layout = SequenceLayout(U, grid)
    n_vis = layout.vision_len
    vis_idx = torch.arange(U, U + n_vis, device=dev)
    return dict(input_ids=ids, text_indexes=torch.arange(U, device=dev),
                position_ids=position_ids(cfg, layout, fps).to(device=dev, dtype=torch.float32),
                und_len=U, sequence_length=layout.total, vision_tokens=[vis[None]],
                vision_token_shapes=[grid], vision_sequence_indexes=vis_idx, vision_mse_loss_indexes=vis_idx,
                vision_timesteps=torch.as_tensor(t, dtype=torch.float32, device=dev).expand(n_vis),
                vision_noisy_frame_indexes=[torch.arange(T, device=dev)], return_dict=False)


def _cosmos3(quick, layers=None):
    from phyx.models.cosmos3 import NANO, Cosmos3Omni, tiny_config

    cfg = _with_layers(tiny_config() if quick else NANO, "num_hidden_layers", layers)
    C = cfg.latent_channel
    lat = (C, 3, 8, 8) if quick else (C, 24, 44, 80)  # 720p 93 frames through Wan2.2's VAE
    n_text = 16 if quick else 512

    def inputs(dtype):
        dev = _dev()
        return (torch.randint(0, min(1000, cfg.vocab_size), (n_text,), device=dev),
                torch.randn(*lat, device=dev, dtype=dtype),
                torch.tensor(0.5, device=dev))

    def build_phyx(dtype):
        with _default_dtype(dtype):
            m = _randomise(Cosmos3Omni(cfg))
        return m, lambda m, ids, vis, t: m(ids, vis, t)["vision"]

    def build_diffusers(dtype):
        from diffusers.models.transformers.transformer_cosmos3 import Cosmos3OmniTransformer

        d = cfg.to_diffusers_dict()
        d.pop("_class_name", None)
        with _default_dtype(dtype):
            m = _randomise(Cosmos3OmniTransformer(**d))
        # the packed layout is rebuilt every step, as phyx's forward rebuilds its position ids
        return m, lambda m, ids, vis, t: m(**_cosmos3_diffusers_kwargs(cfg, ids, vis, t))[0][0]

    p = cfg.latent_patch_size
    tokens = lat[1] * (lat[2] // p) * (lat[3] // p)
    return dict(inputs=inputs, phyx=build_phyx, diffusers=build_diffusers,
                shape={"latent": list(lat), "text_tokens": n_text, "tokens": tokens + n_text})


MODELS = {
    "wan2.1-1.3b-480p81f": lambda q, layers=None: _wan("wan2.1-t2v-1.3b", q, layers),
    "wan2.1-14b-480p81f": lambda q, layers=None: _wan("wan2.1-t2v-14b", q, layers),
    "cosmos-predict2-2b-720p93f": lambda q, layers=None: _predict2("2B-Text2Image", q, layers),
    "cosmos3-nano-720p": _cosmos3,
}


# ------------------------------------------------------------------ measuring one implementation
def _with_query_heads(query_shape, kv_shape):
    """K/V shape [B, H_kv, S, D] with the query's head count: GQA costs what the broadcast
    attention costs (each query head attends over all keys)."""
    return (*kv_shape[:1], query_shape[1], *kv_shape[2:])


def _sdpa_gqa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, _with_query_heads(query_shape, key_shape),
                           _with_query_heads(query_shape, value_shape))


def _sdpa_gqa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                             **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out_shape, query_shape, _with_query_heads(query_shape, key_shape),
                                    _with_query_heads(query_shape, value_shape))


def gqa_flop_mapping() -> dict:
    """FlopCounterMode formulas for the fused SDPA kernels that accept fewer K/V heads than
    query heads (Cosmos3: 32 q / 8 kv). Older torch's formulas assert equal head counts, which
    made the whole count fail on CUDA; the count is the same as for repeated K/V heads."""
    aten = torch.ops.aten
    out = {}
    for name in ("efficient", "flash", "cudnn"):
        fwd = getattr(aten, f"_scaled_dot_product_{name}_attention", None)
        bwd = getattr(aten, f"_scaled_dot_product_{name}_attention_backward", None)
        if fwd is not None:
            out[fwd] = _sdpa_gqa_flops
        if bwd is not None:
            out[bwd] = _sdpa_gqa_backward_flops
    return out


def _count_flops(step) -> tuple[float | None, str | None]:
    """(FLOPs of one step, None) or (None, why counting failed); the time is recorded anyway."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False, custom_mapping=gqa_flop_mapping()) as fc:
            step()
        return float(fc.get_total_flops()), None
    except Exception as e:  # noqa: BLE001 - MFU is then left out, the reason is recorded
        return None, f"{type(e).__name__}: {str(e)[:200]}"


# Ops whose fused vendor kernels are swapped for the plain-torch reference under --compile, so
# that inductor sees (and fuses) the whole elementwise chain instead of opaque kernel calls.
COMPILE_AS_REFERENCE = ("rms_norm", "layer_norm", "rope", "modulate", "gated_residual", "norm_modulate")


def repeated_blocks(model) -> list:
    """The model's transformer blocks: the children of its longest nn.ModuleList."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no nn.ModuleList of blocks to compile")
    return list(max(lists, key=len))


def compile_blocks(model) -> int:
    """Regional compilation, the same for phyx and diffusers: torch.compile each repeated block
    in place (one graph, reused by every block). Returns the number of blocks compiled."""
    blocks = repeated_blocks(model)
    for blk in blocks:
        blk.compile()
    return len(blocks)


@contextlib.contextmanager
def _reference_elementwise():
    with contextlib.ExitStack() as stack:
        for op in COMPILE_AS_REFERENCE:
            stack.enter_context(phyx.ops.kernel_override(op, "reference"))
        yield


PEER_ATTENTION = ("native", "fa4")


def _diffusers_backend(name: str):
    """diffusers' attention backend for --peer-attention: 'native' (torch SDPA, diffusers' default)
    or 'fa4', diffusers' own FlashAttention-4 backend ('flash_4_hub') fed the installed
    flash-attn-4 instead of a Hub download (there is no Hub here)."""
    from diffusers.models import attention_dispatch as ad

    if name == "native":
        return ad.AttentionBackendName.NATIVE
    if name != "fa4":
        raise ValueError(f"unknown --peer-attention {name!r}; choose one of {PEER_ATTENTION}")
    try:
        from flash_attn.cute import flash_attn_func
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"--peer-attention fa4 needs flash-attn-4 (pip install 'phyx[fa4]'): {e}") from e
    cfg = ad._HUB_KERNELS_REGISTRY[ad.AttentionBackendName.FLASH_4_HUB]
    cfg.kernel_fn = cfg.kernel_fn or torch.compiler.disable(flash_attn_func)
    return ad.AttentionBackendName.FLASH_4_HUB


@contextlib.contextmanager
def _diffusers_attention(backend):
    """Every attention call of diffusers in this scope (the checkpoint recompute in backward
    too) goes to `backend`."""
    from diffusers.models import attention_dispatch as ad

    before = ad._AttentionBackendRegistry._active_backend
    ad._AttentionBackendRegistry.set_active_backend(backend)
    try:
        yield
    finally:
        ad._AttentionBackendRegistry.set_active_backend(before)


@contextlib.contextmanager
def _countable_attention():
    """torch's FLOP counter sees aten's SDPA kernels, not FlashAttention-4's CuTe kernels: while
    counting, both implementations run attention through SDPA (the same arithmetic)."""
    names = [k.name for k in phyx.ops.available_kernels("attention")]
    swap = "sdpa" in names and phyx.ops.chosen_kernel("attention").name != "sdpa"
    with contextlib.ExitStack() as stack:
        if swap:
            stack.enter_context(phyx.ops.kernel_override("attention", "sdpa"))
        try:
            from diffusers.models import attention_dispatch as ad
        except Exception:  # noqa: BLE001 - no diffusers: nothing to switch
            ad = None
        if ad is not None:
            stack.enter_context(_diffusers_attention(ad.AttentionBackendName.NATIVE))
        yield


def _attention_used(impl: str, peer_attention: str) -> str:
    if impl == "phyx":
        return phyx.ops.chosen_kernel("attention").name
    return {"native": "diffusers native (torch SDPA)", "fa4": "diffusers flash_4_hub (FlashAttention-4)"}[peer_attention]


def _measure(build, inputs, mode, dtype, peak_tflops, iters, breakdown=False, compile=False,
             attention_scope=None, profile_dir=None):
    with contextlib.ExitStack() as stack:
        if compile:
            stack.enter_context(_reference_elementwise())
        if attention_scope is not None:
            stack.enter_context(attention_scope)
        return _measure_step(build, inputs, mode, dtype, peak_tflops, iters, breakdown, compile,
                             profile_dir)


def _measure_step(build, inputs, mode, dtype, peak_tflops, iters, breakdown, compile, profile_dir=None):
    dev = phyx.get_backend().device
    model, call = build(dtype)
    if compile:
        torch._dynamo.reset()
        compile_blocks(model)
    args = inputs(dtype)
    if mode == "forward":
        model.eval()

        def step():
            with torch.no_grad():
                return call(model, *args)  # noqa: F821
    else:
        model.train()
        # Both implementations recompute blocks in backward (activation checkpointing), so the
        # training step of the big models fits one device; FLOPs then include the recompute.
        if hasattr(model, "enable_gradient_checkpointing"):
            model.enable_gradient_checkpointing()

        def step():
            out = call(model, *args)  # noqa: F821
            out.float().square().mean().backward()
            for p in model.parameters():  # noqa: F821
                p.grad = None
    rec = {}
    try:
        dev.reset_peak_memory_stats()
        base = dev.memory_allocated()
        t = time_call(step, warmup=1, iters=iters)
        rec.update(ms=t["median_ms"], min_ms=t["min_ms"],
                   peak_mem_mb=(dev.max_memory_allocated() - base) / 2**20 if dev.device_type != "cpu" else None,
                   weights_mb=sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20)
        if breakdown:
            from phyx.tools.bench.profile import kernel_breakdown

            rec["breakdown"] = kernel_breakdown(step)
        if profile_dir:
            # one more step, after the timed ones, under the vendor's profiler (torch_npu's on
            # the NPU): the trace is for the vendor's tools; it changes no recorded time
            from phyx.tools.bench.profile import maybe_profile

            with maybe_profile(profile_dir):
                step()
            rec["profile_dir"] = profile_dir
        with _countable_attention():
            flops, why = _count_flops(step)
        if why:
            rec["flops_error"] = why
        if flops:
            rec["flops"] = flops
            rec["tflops"] = flops / (rec["ms"] * 1e-3) / 1e12
            if peak_tflops:
                rec["mfu"] = rec["tflops"] / peak_tflops
    finally:
        del model, args
        gc.collect()
        dev.empty_cache()
    return rec


def run_models(models=None, modes=("forward", "train"), quick=False, peer=True, peak_tflops=None,
               dtype=torch.bfloat16, layers=None, breakdown=False, compile=False,
               peer_attention="native", profile_dir=None, log=print) -> dict:
    from phyx.tools.bench.env import machine_meta
    from phyx.tools.bench.ops import device_peaks

    out = {"kind": "phyx-bench-models", "schema": 1, "meta": machine_meta(), "quick": quick,
           "models": []}
    if peak_tflops is None:
        out["peaks"] = device_peaks(quick, log)
        peak_tflops = out["peaks"]["matmul_tflops"]
    out["peak_tflops_for_mfu"] = peak_tflops
    out["layers"] = layers  # None: every block of the real model
    # compile: every implementation's repeated blocks go through torch.compile (phyx with its
    # elementwise ops as plain torch, see COMPILE_AS_REFERENCE); the time of a step excludes the
    # compilation (the warm-up step compiles)
    out["compiled"] = bool(compile)
    # the diffusers peer's attention backend: its default (torch SDPA) or FlashAttention-4
    out["peer_attention"] = peer_attention
    peer_backend = _diffusers_backend(peer_attention) if peer and peer_attention != "native" else None
    unknown = [n for n in (models or []) if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    for name in (models or list(MODELS)):
        try:
            spec = MODELS[name](quick, layers=layers)
        except ValueError:
            raise  # a bad --layers is the caller's error, not a model that is missing
        except Exception as e:  # noqa: BLE001 - a model not written yet is recorded, not fatal
            out["models"].append({"case": name, "skipped": f"{type(e).__name__}: {e}"})
            log(f"{name}: skipped ({type(e).__name__}: {e})")
            continue
        for mode in modes:
            per_impl = {}
            for impl in (("phyx", "diffusers") if peer else ("phyx",)):
                rec = {"case": name, "mode": mode, "impl": impl, "shape": spec["shape"],
                       "dtype": str(dtype).replace("torch.", ""), "compiled": bool(compile),
                       "attention": _attention_used(impl, peer_attention)}
                scope = (_diffusers_attention(peer_backend)
                         if impl == "diffusers" and peer_backend is not None else None)
                try:
                    rec.update(_measure(spec[impl], spec["inputs"], mode, dtype, peak_tflops,
                                        iters=2, breakdown=breakdown, compile=compile,
                                        attention_scope=scope,
                                        profile_dir=os.path.join(profile_dir, f"{name}-{mode}-{impl}")
                                        if profile_dir else None))
                except torch.OutOfMemoryError as e:
                    rec["error"] = f"out of memory: {str(e)[:160]}"
                except Exception as e:  # noqa: BLE001
                    rec["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                gc.collect()
                phyx.get_backend().device.empty_cache()
                per_impl[impl] = rec
                out["models"].append(rec)
                log(f"{name} {mode:<7} {impl:<9} " + (
                    f"{rec['ms']:9.1f} ms  MFU {rec.get('mfu', float('nan')):.1%}  peak "
                    f"{(rec.get('peak_mem_mb') or 0) / 1024:.1f} GiB" if "ms" in rec else rec["error"]))
                if "breakdown" in rec:
                    log("    " + "  ".join(f"{k} {v:.1f}" for k, v in rec["breakdown"]["ms_per_category"].items())
                        + f"  (ms, {rec['breakdown']['source']})")
            p, d = per_impl.get("phyx", {}), per_impl.get("diffusers", {})
            if "ms" in p and "ms" in d:
                p["speedup_vs_diffusers"] = d["ms"] / p["ms"]
                log(f"  => {name} {mode}: phyx is {p['speedup_vs_diffusers']:.2f}x diffusers")
    return out
