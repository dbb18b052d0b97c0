"""A/B on one GPU, one process: Wan 1.3B and Predict2 forward with norm_modulate fused vs composite."""
import torch

import phyx
from phyx.tools.bench.models import MODELS
from phyx.tools.bench.timing import time_call

phyx.set_backend("cuda")
for name in ("wan2.1-1.3b-480p81f", "wan2.1-14b-480p81f"):
    spec = MODELS[name](False, layers=None if "1.3b" in name else 8)
    m, call = spec["phyx"](torch.bfloat16)
    args = spec["inputs"](torch.bfloat16)
    m.eval()
    res = {"triton.norm_modulate": [], "reference": []}
    for rnd in range(3):
        for pin in res:
            phyx.ops.use_kernel("norm_modulate", pin)
            with torch.no_grad():
                res[pin].append(time_call(lambda: call(m, *args), warmup=1, iters=3)["median_ms"])  # noqa: F821
    phyx.ops.use_kernel("norm_modulate", None)
    print(name, {k: [round(v, 1) for v in vs] for k, vs in res.items()})
    del m, args
    torch.cuda.empty_cache()
