"""Op parity: every op x {fp32, bf16, fp16} x every available backend x both kernel policies,
against the float64 oracle (phyx.ops.reference on float64 copies) with per-dtype thresholds.

A kernel may refuse an argument it cannot honour (UnsupportedArgumentError, never a silent
drop); the same case must then pass under policy 'reference' on that backend.
"""
from __future__ import annotations

import functools

import pytest
import torch

import phyx.ops as ops
from phyx.errors import UnsupportedArgumentError
from phyx.tools.parity import metrics as M
from phyx.tools.parity.backends import using_backend
from phyx.tools.parity.op_cases import as_outputs, make_inputs, op_cases, random_cases, to_device
from phyx.tools.parity.ops_report import oracle

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CASES = op_cases() + [c for s in range(3) for c in random_cases(s)]
_BY_ID = {c.id: c for c in CASES}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_op_has_a_case():
    assert {c.op for c in op_cases()} == set(ops.OP_NAMES)


@functools.lru_cache(maxsize=None)
def _inputs_and_oracle(case_id, dtype_name):
    case = _BY_ID[case_id]
    args, kwargs = make_inputs(case, DTYPES[dtype_name], seed=0)
    return args, kwargs, oracle(case, args, kwargs)


def _check(case, dtype_name, backend_name, policy):
    dtype = DTYPES[dtype_name]
    args, kwargs, expected = _inputs_and_oracle(case.id, dtype_name)
    with using_backend(backend_name, policy) as b:
        dev = b.torch_device(0) if b.device_type != "cpu" else torch.device("cpu")
        a, k = to_device(args, kwargs, dev)
        try:
            got = as_outputs(getattr(ops, case.op)(*a, **k))
        except UnsupportedArgumentError as e:
            assert policy == "fast", f"the reference kernel refused {case.id}: {e}"
            assert ops.chosen_kernel(case.op).name in str(e)  # names the refusing kernel
            return "refused"
    assert len(got) == len(expected)
    thr = M.threshold_for(dtype, case.tol_scale)
    for name, g, e in zip(case.outputs, got, expected):
        assert g.shape == e.shape, (case.id, name)
        if name == "out":
            assert g.dtype == dtype, f"{case.id}: output dtype {g.dtype}, input dtype {dtype}"
        m = M.compare(g.cpu(), e)
        status, reason = M.verdict(m, thr)
        assert status == M.PASS, f"{backend_name}/{policy} {case.id}[{name}] {dtype_name}: {reason}"
    return "ok"


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_op_matches_float64_oracle(case, dtype_name, backend_name):
    """Policy 'fast' (the vendor kernels); where a fast kernel refuses an argument, the same
    case must pass under policy 'reference' on that backend."""
    if _check(case, dtype_name, backend_name, "fast") == "refused":
        _check(case, dtype_name, backend_name, "reference")


def test_fully_masked_rows_are_zero(backend_name):
    case = next(c for c in op_cases() if c.name == "bool_mask_masked_rows")
    args, kwargs = make_inputs(case, torch.float32)
    with using_backend(backend_name, "fast") as b:
        dev = b.torch_device(0) if b.device_type != "cpu" else torch.device("cpu")
        a, k = to_device(args, kwargs, dev)
        out = ops.attention(*a, **k).cpu()
    assert torch.isfinite(out).all()
    assert out[0, 3].abs().max() == 0 and out[1, 10].abs().max() == 0


def test_thresholds_catch_a_planted_wrong_result():
    """The fp32 limits are tight enough for typical translation bugs."""
    case = next(c for c in op_cases() if c.name == "bool_mask_masked_rows")
    args, kwargs = make_inputs(case, torch.float32)
    expected = oracle(case, args, kwargs)[0]
    thr = M.threshold_for(torch.float32)
    inverted = dict(kwargs, attn_mask=~kwargs["attn_mask"])  # mask meaning not inverted
    bad = ops.reference.attention(*args, **inverted)
    assert M.verdict(M.compare(bad, expected), thr)[0] == M.FAIL
    no_scale = ops.reference.attention(*args, **kwargs, scale=1.0)  # NPU default scale kept
    assert M.verdict(M.compare(no_scale, expected), thr)[0] == M.FAIL
    x = torch.randn(2, 37, 96) * 3
    tanh_for_exact = ops.reference.gelu(x, "tanh")
    assert M.verdict(M.compare(tanh_for_exact, ops.reference.gelu(x.double(), "none")), thr)[0] == M.FAIL
