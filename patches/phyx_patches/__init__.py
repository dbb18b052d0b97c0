"""phyx_patches: opt-in, scoped shims that let CUDA-only third-party code run on any phyx backend.

    import phyx_patches
    with phyx_patches.scope():              # or scope(["flash_attn", "torch_cuda"])
        import upstream_model               # imports flash_attn, calls torch.cuda, .cuda()
        out = upstream_model.run()
    # here sys.modules and every patched attribute are exactly as before

    phyx_patches.enable(["apex"]); ...; phyx_patches.disable()

Nothing is patched on import. Shims: flash_attn (FA2 flash_attn / flash_attn.flash_attn_interface
and FA3 flash_attn_interface -> phyx.ops.attention), apex (apex.normalization FusedRMSNorm /
FusedLayerNorm -> phyx.ops.rms_norm / layer_norm), transformer_engine (RMSNorm, LayerNorm,
RotaryPositionEmbedding, apply_rotary_pos_emb -> phyx.ops), torch_cuda (torch.cuda device calls,
`.cuda()`, 'cuda' device strings -> the active backend), xformers (memory_efficient_attention
and its biases -> phyx.ops.attention), liger_kernel (norms, RoPE, SwiGLU/GEGLU -> phyx.ops),
and opt-in sdpa (plain torch SDPA -> phyx.ops.attention). Enable them before importing the
upstream code: a module that already holds a reference to the real flash_attn keeps it.
"""
from __future__ import annotations

import contextlib
import warnings

from phyx_patches import _state

SHIMS = ("flash_attn", "apex", "transformer_engine", "torch_cuda", "xformers", "liger_kernel",
         "sdpa")
# enabled when no names are given; 'sdpa' (route plain torch SDPA through phyx.ops.attention)
# is opt-in: scope(phyx_patches.DEFAULT + ("sdpa",))
DEFAULT = ("flash_attn", "apex", "transformer_engine", "torch_cuda", "xformers", "liger_kernel")


def available() -> tuple[str, ...]:
    return SHIMS


def active() -> list[str]:
    return [n for layer in _state.STACK for n in layer.names]


def _install(name: str, layer) -> bool:
    if name == "flash_attn":
        from phyx_patches import flash_attn_shim

        flash_attn_shim.install(layer)
    elif name == "apex":
        from phyx_patches.vendor_modules import install_apex

        install_apex(layer)
    elif name == "transformer_engine":
        from phyx_patches.vendor_modules import install_transformer_engine

        install_transformer_engine(layer)
    elif name == "xformers":
        from phyx_patches import xformers_shim

        xformers_shim.install(layer)
    elif name == "liger_kernel":
        from phyx_patches import liger_shim

        liger_shim.install(layer)
    elif name == "sdpa":
        from phyx_patches import sdpa_shim

        sdpa_shim.install(layer)
    elif name == "torch_cuda":
        from phyx_patches import torch_cuda_shim

        if not torch_cuda_shim.install(layer):
            warnings.warn("phyx_patches: torch_cuda shim not installed: the active backend is "
                          "cuda, so torch.cuda already is the right device API", stacklevel=3)
            return False
    return True


def enable(names=None) -> _state.Layer:
    """Install the named shims (default: all). Returns the layer; disable() removes it."""
    names = list(DEFAULT if names is None else ([names] if isinstance(names, str) else names))
    unknown = [n for n in names if n not in SHIMS]
    if unknown:
        raise ValueError(f"unknown phyx_patches shim(s) {unknown}; available: {list(SHIMS)}")
    import phyx

    # choose the backend before torch.cuda is patched: autodetect must see the truth
    phyx.get_backend()
    on = set(active())
    layer = _state.Layer(())
    installed = []
    try:
        for n in names:
            if n not in on and _install(n, layer):
                installed.append(n)
    except BaseException:
        layer.close()
        raise
    layer.names = tuple(installed)
    _state.STACK.append(layer)
    return layer


def disable(layer: _state.Layer | None = None) -> None:
    """Undo `layer` and every layer enabled after it (default: all layers)."""
    if layer is not None and layer not in _state.STACK:
        return
    while _state.STACK:
        top = _state.STACK.pop()
        top.close()
        if top is layer:
            break


@contextlib.contextmanager
def scope(names=None):
    layer = enable(names)
    try:
        yield layer
    finally:
        disable(layer)


__all__ = ["enable", "disable", "scope", "available", "active", "SHIMS", "DEFAULT"]
