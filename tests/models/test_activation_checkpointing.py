"""Activation checkpointing recomputes blocks in backward: same loss, same gradients."""
import pytest
import torch

import phyx
from phyx.tools.parity.model import get_model_spec


def _out_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return torch.cat([_out_tensor(v).flatten() for v in out.values() if v is not None])
    return torch.cat([_out_tensor(v).flatten() for v in out if v is not None])


@pytest.mark.parametrize("name", ["tiny-wan-t2v", "tiny-cosmos-predict2-t2i", "tiny-cosmos3-video"])
def test_checkpointing_gives_the_same_gradients(name, monkeypatch):
    import phyx.models.activation_checkpointing as ac

    calls = []
    real = ac.checkpoint
    monkeypatch.setattr(ac, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    phyx.set_backend("cpu", "fast")
    spec = get_model_spec(name)
    grads = []
    for enabled in (False, True):
        model = spec.build().float()
        assert hasattr(model, "enable_gradient_checkpointing")
        model.enable_gradient_checkpointing(enabled)
        inputs = spec.make_inputs(spec.seed)
        out = _out_tensor(spec.forward(model, inputs, torch.device("cpu"), torch.float32))
        out.float().square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert (len(calls) > 0) == enabled  # blocks really went through checkpoint()
    plain, ckpt = grads
    assert plain.keys() == ckpt.keys() and len(plain) > 0
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], rtol=1e-5, atol=1e-6, msg=n)
