"""Probe: FlashAttention-4 (flash_attn.cute, CuTe DSL) against torch SDPA at the model shapes.

Times forward and forward+backward for each kernel, checks FA4's output and gradients against
SDPA's (cuDNN) on the same inputs, prints one line per case. Run on a GPU with flash-attn-4
importable: python benchmarks/tools/fa4_probe.py [--quick]
"""
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = {  # B, S, Nq, Nkv, D
    "wan14b_480p81f": (1, 32760, 40, 40, 128),
    "wan1.3b_480p81f": (1, 32760, 12, 12, 128),
    "predict2_720p93f": (1, 84480, 16, 16, 128),
    "cosmos3_720p93f": (1, 21120, 32, 8, 128),
}


def timed(fn, iters=5):
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2]


def main():
    from flash_attn.cute import flash_attn_func
    print("torch", torch.__version__, torch.cuda.get_device_name(), flush=True)
    for name, (B, S, Nq, Nkv, D) in SHAPES.items():
        g = torch.Generator(device="cuda").manual_seed(0)
        q = torch.randn(B, S, Nq, D, device="cuda", dtype=torch.bfloat16, generator=g)
        k = torch.randn(B, S, Nkv, D, device="cuda", dtype=torch.bfloat16, generator=g)
        v = torch.randn(B, S, Nkv, D, device="cuda", dtype=torch.bfloat16, generator=g)
        do = torch.randn(B, S, Nq, D, device="cuda", dtype=torch.bfloat16, generator=g)
        flops = 4 * B * S * S * Nq * D
        gqa = Nq != Nkv

        def sdpa(q, k, v, backend=None):
            qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
            if backend is None:
                o = F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=gqa)
            else:
                with sdpa_kernel(backend):
                    o = F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=gqa)
            return o.transpose(1, 2)

        def fa4(q, k, v):
            return flash_attn_func(q, k, v)[0]

        t0 = time.time()
        fa4(q, k, v)
        torch.cuda.synchronize()
        print(f"{name}: fa4 first call (JIT) {time.time() - t0:.1f}s", flush=True)
        ref = sdpa(q, k, v)
        out = fa4(q, k, v)
        err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
        print(f"{name}: fwd rel L2 fa4 vs sdpa {err:.2e}", flush=True)
        kernels = {"sdpa": lambda a, b, c: sdpa(a, b, c), "sdpa.cudnn": lambda a, b, c: sdpa(a, b, c, SDPBackend.CUDNN_ATTENTION),
                   "sdpa.flash": lambda a, b, c: sdpa(a, b, c, SDPBackend.FLASH_ATTENTION), "fa4": fa4}
        grads = {}
        for kname, fn in kernels.items():
            if gqa and kname == "sdpa.flash":
                continue
            try:
                ms = timed(lambda: fn(q, k, v))  # noqa: F821
                qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))

                def fb():
                    o = fn(qg, kg, vg)
                    o.backward(do)  # noqa: F821
                msb = timed(fb, iters=3)
                qg.grad = kg.grad = vg.grad = None
                fn(qg, kg, vg).backward(do)
                grads[kname] = (qg.grad.float(), kg.grad.float(), vg.grad.float())
                print(f"{name}: {kname:11s} fwd {ms:8.2f} ms {flops / ms / 1e9:6.0f} TFLOP/s | "
                      f"fwd+bwd {msb:8.2f} ms {3.5 * flops / msb / 1e9:6.0f} TFLOP/s", flush=True)
            except Exception as e:  # noqa: BLE001
                print(f"{name}: {kname} failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
        if "fa4" in grads and "sdpa" in grads:
            errs = [((a - b).norm() / b.norm()).item() for a, b in zip(grads["fa4"], grads["sdpa"])]
            print(f"{name}: grad rel L2 fa4 vs sdpa dq {errs[0]:.2e} dk {errs[1]:.2e} dv {errs[2]:.2e}", flush=True)
        del q, k, v, do, grads
        torch.cuda.empty_cache()
        if "--quick" in sys.argv:
            break


if __name__ == "__main__":
    main()
