"""What the port scanner looks for: each category, why it matters off CUDA, and the phyx
replacement. Kept as data so the CLI can list it (`phyx port rules`) and the docs agree."""
from __future__ import annotations

from dataclasses import dataclass

CUDA_ONLY = "cuda-only"
TRAP = "numerical-trap"


@dataclass(frozen=True)
class Category:
    name: str
    kind: str          # CUDA_ONLY: will not run elsewhere; TRAP: runs, but numbers may differ
    what: str
    replacement: str
    shim: str | None = None   # the phyx_patches shim that serves it unchanged, if any


CATEGORIES: dict[str, Category] = {c.name: c for c in [
    Category("cuda-api", CUDA_ONLY, "torch.cuda.* device calls",
             "phyx.device (synchronize, set_device, device_count, manual_seed, memory stats, "
             "torch_device())", "torch_cuda"),
    Category("cuda-tensor", CUDA_ONLY, "`.cuda()` on a tensor or module",
             ".to(phyx.device.torch_device())", "torch_cuda"),
    Category("cuda-device-string", CUDA_ONLY, "a 'cuda' device string or torch.device('cuda')",
             "phyx.device.torch_device() (or phyx.device.device_type() for autocast)", "torch_cuda"),
    Category("cuda-env", CUDA_ONLY, "CUDA_* environment variables (CUDA_VISIBLE_DEVICES, ...)",
             "phyx.get_backend().visible_devices_env names the vendor's variable", None),
    Category("cuda-amp", CUDA_ONLY, "torch.cuda.amp (autocast, GradScaler)",
             "phyx.device.autocast(dtype); torch.amp.GradScaler(phyx.device.device_type())",
             "torch_cuda"),
    Category("cuda-graph", CUDA_ONLY, "CUDA graphs (CUDAGraph, graph, make_graphed_callables)",
             "no portable equivalent: run eagerly (or torch.compile) when "
             "phyx.device.device_type() != 'cuda'", None),
    Category("cuda-stream", CUDA_ONLY, "CUDA streams and events",
             "phyx.device.Stream / phyx.device.Event / phyx.get_backend().device.stream(s)",
             "torch_cuda"),
    Category("cuda-extension", CUDA_ONLY, "a compiled CUDA extension (CUDAExtension, .cu sources)",
             "a phyx op (phyx.ops) with a plain-torch reference; vendor kernels register "
             "through a backend plug-in", None),
    Category("flash-attn", CUDA_ONLY, "flash_attn / flash_attn_interface",
             "phyx.ops.attention(q, k, v, is_causal=..., scale=...) in [B,S,N,D]; flash-attn's "
             "causal is bottom-right aligned, phyx's top-left: equal only when Sq == Skv",
             "flash_attn"),
    Category("flash-attn-private", CUDA_ONLY,
             "flash-attn's private kernels (_flash_attn_forward / _varlen_forward / backward, "
             "flash_attn_2_cuda)",
             "phyx.ops.attention(q, k, v, scale=..., return_lse=True) -> (out, lse [B,N,Sq]); the "
             "flash_attn shim serves _flash_attn_forward and _flash_attn_varlen_forward (2.7+ "
             "and older tuples), not the backward kernels (let autograd differentiate)",
             "flash_attn"),
    Category("sdpa-backend", CUDA_ONLY, "SDPA limited to CUDA-only kernels "
             "(SDPBackend.EFFICIENT_ATTENTION / CUDNN_ATTENTION in sdpa_kernel): no kernel left "
             "elsewhere",
             "allow SDPBackend.MATH (and FLASH_ATTENTION, which the CPU has) too, or call "
             "phyx.ops.attention; the torch_cuda shim adds them", "torch_cuda"),
    Category("xformers", CUDA_ONLY, "xformers memory-efficient attention",
             "phyx.ops.attention (same [B,S,N,D] layout); attention biases: None, "
             "LowerTriangularMask (is_causal), BlockDiagonalMask (varlen), tensors (additive)",
             "xformers"),
    Category("liger-kernel", CUDA_ONLY, "Liger Triton kernels (liger_kernel)",
             "phyx.ops.rms_norm / rope / swiglu / gelu; the liger_kernel shim serves those it "
             "covers", "liger_kernel"),
    Category("xfuser", CUDA_ONLY, "xDiT / yunchang sequence-parallel runtime",
             "phyx.parallel (Ulysses / ring / CFG parallel) or run single-device", None),
    Category("triton-kernel", CUDA_ONLY, "hand-written Triton kernels (@triton.jit, import triton)",
             "a phyx op with a plain-torch reference (vendor kernels register through a "
             "backend plug-in), or the plain-torch path of the same function", None),
    Category("fp8-quant", CUDA_ONLY, "FP8 / INT8 quantisation (torch.float8_* dtypes, torchao, "
             "q8_kernels, _scaled_mm)",
             "run the unquantised model for parity; FP8 support differs by vendor and chip",
             None),
    Category("apex", CUDA_ONLY, "NVIDIA apex (fused norms, amp, optimizers)",
             "phyx.ops.rms_norm / phyx.ops.layer_norm; torch.optim fused=False optimizers",
             "apex"),
    Category("transformer-engine", CUDA_ONLY, "NVIDIA transformer_engine",
             "phyx.ops.rms_norm / layer_norm / rope; torch.nn.Linear for te.Linear",
             "transformer_engine"),
    Category("natten", CUDA_ONLY, "natten neighborhood attention",
             "no phyx kernel: phyx.ops.attention with a neighborhood bool mask (or sliced K/V)",
             None),
    Category("nvml", CUDA_ONLY, "NVML device queries (pynvml, nvidia-smi)",
             "phyx.get_backend().describe_devices() and phyx.device memory stats", None),
    Category("nccl", CUDA_ONLY, "the 'nccl' process-group backend or NCCL_* settings",
             "phyx.comm.init_distributed() (takes phyx.get_backend().dist_backend: nccl / hccl "
             "/ gloo) and backend.dist_env_defaults()", None),
    Category("float64-on-device", TRAP, "float64 tensors that may live on the device",
             "build the table on the host in float64 and apply it in float32 on the device "
             "(phyx.ops.rope_tables.to_cos_sin); the NPU has no fast float64 kernels", None),
    Category("complex-on-device", TRAP, "complex tensors (view_as_complex, polar, complex dtypes)",
             "real cos/sin tables: phyx.ops.rope(x, cos, sin, style) with "
             "phyx.ops.rope_tables; the NPU has no complex kernels", None),
    Category("device-rng", TRAP, "random numbers drawn on the device",
             "draw on the CPU with a torch.Generator, then .to(device): the same seed gives "
             "different numbers on different vendors", None),
    Category("native-gelu", TRAP, "torch's native gelu (F.gelu / nn.GELU)",
             "phyx.ops.gelu(x, approximate): the NPU's native gelu ignores `approximate` and "
             "computes tanh", None),
]}


def kind_of(category: str) -> str:
    return CATEGORIES[category].kind


def expand(names: str) -> set[str]:
    """'any' | 'cuda-only' | 'numerical-trap' | comma list of categories -> category set."""
    out: set[str] = set()
    for raw in names.split(","):
        n = raw.strip()
        if not n:
            continue
        if n in ("any", "all"):
            out |= set(CATEGORIES)
        elif n in (CUDA_ONLY, TRAP, "traps"):
            kind = CUDA_ONLY if n == CUDA_ONLY else TRAP
            out |= {c for c, cat in CATEGORIES.items() if cat.kind == kind}
        elif n in CATEGORIES:
            out.add(n)
        else:
            raise ValueError(f"unknown category {n!r}; use 'any', 'cuda-only', 'numerical-trap' "
                             f"or one of: {', '.join(CATEGORIES)}")
    return out
