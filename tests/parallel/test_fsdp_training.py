"""FSDP2 training: AdamW steps of the tiny Wan DiT, fully_shard'ed over 2 gloo ranks through
phyx.parallel.fsdp (each rank trains on its half of the batch), equal the single-process steps
on the whole batch: losses, whole gradients (all-gathered from the shards) and updated
parameters, fp32, relative L2 < 1e-5; also with activation checkpointing on top of FSDP.
One rank pool per backend; the single-process reference runs once per backend in this process.
"""
from __future__ import annotations

import pytest
import torch

from phyx.parallel.testing_block import rel_l2
from phyx.testing.multiproc import RankPool, rank_backend_params

TOL = 1e-5
WORLD = 2
BATCH = 4          # 2 samples per rank
STEPS = 2          # the second step uses AdamW's moments from the first
ADAMW = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)


def _batch(seed: int):
    """The whole training batch for the tiny t2v config: latent [B, 4, 2, 4, 4] (8 tokens),
    timesteps [B], text [B, 16, 32], target [B, 4, 2, 4, 4]; one per step."""
    g = torch.Generator().manual_seed(seed)
    return [dict(x=torch.randn(BATCH, 4, 2, 4, 4, generator=g),
                 t=torch.rand(BATCH, generator=g) * 1000,
                 context=torch.randn(BATCH, 16, 32, generator=g),
                 target=torch.randn(BATCH, 4, 2, 4, 4, generator=g)) for _ in range(STEPS)]


def _model(seed: int):
    from phyx.models.wan import get_config
    from phyx.models.wan.loading import seeded_model

    return seeded_model(get_config("tiny-t2v"), seed).float().train()


def _train(model, batches, micro_batches: list[slice], grads_of):
    """STEPS AdamW steps; each step's gradient is the mean over `micro_batches` (row slices of
    the batch) of their loss gradients. Returns (losses, gradients per step)."""
    opt = torch.optim.AdamW(model.parameters(), **ADAMW)
    losses, grads = [], []
    for b in batches:
        loss = 0.0
        for rows in micro_batches:
            out = model(b["x"][rows], b["t"][rows], b["context"][rows])
            part = (out - b["target"][rows]).square().mean() / len(micro_batches)
            part.backward()
            loss = loss + part.detach()
        losses.append(loss)
        grads.append(grads_of(model))
        opt.step()
        opt.zero_grad(set_to_none=True)
    return losses, grads


def _rank_rows(rank: int) -> slice:
    n = BATCH // WORLD
    return slice(rank * n, (rank + 1) * n)


def single_process(seed: int) -> dict:
    """The reference: one process, the ranks' micro-batches accumulated in rank order (the same
    sum FSDP's reduce-scatter forms, so only rounding differs; a whole-batch gradient differs
    from it by fp32 summation order, which AdamW's g / sqrt(v) amplifies past 1e-5)."""
    model = _model(seed)
    losses, grads = _train(model, _batch(seed), [_rank_rows(r) for r in range(WORLD)],
                           lambda m: {n: p.grad.clone() for n, p in m.named_parameters()})
    return dict(losses=losses, grads=grads,
                params={n: p.detach().clone() for n, p in model.named_parameters()})


def _fsdp_rank(seed: int, checkpointing: bool) -> dict:
    """Rank entry point: shard the model over the backend's mesh, train on this rank's rows."""
    import torch.distributed as dist  # test-side spy on the collectives FSDP2 issues

    import phyx.models.activation_checkpointing as ac
    from phyx import comm
    from phyx.parallel import ParallelConfig, init_parallel, reset_parallel_state
    from phyx.parallel.fsdp import full_gradients, full_parameters, shard_model

    # cfg=2 gives the 2-rank mesh; the model is the one-device layout, so the axis carries data
    # parallelism here: each rank a different half of the batch, FSDP averages the gradients.
    st = init_parallel(ParallelConfig(cfg=WORLD))
    calls, reduce_ops = [], []
    real_checkpoint, real_rs = ac.checkpoint, dist.reduce_scatter_single
    ac.checkpoint = lambda *a, **k: calls.append(1) or real_checkpoint(*a, **k)

    def reduce_scatter_single(*a, op=dist.ReduceOp.SUM, **k):  # FSDP2's gradient reduction
        reduce_ops.append(str(op))
        return real_rs(*a, op=op, **k)

    dist.reduce_scatter_single = reduce_scatter_single
    try:
        model = _model(seed)
        full_numel = sum(p.numel() for p in model.parameters())
        shard_model(model, blocks=list(model.blocks), state=st)
        model.enable_gradient_checkpointing(checkpointing)
        local_numel = sum(p.to_local().numel() for p in model.parameters())
        losses, grads = _train(model, _batch(seed), [_rank_rows(st.rank)], full_gradients)
        # The whole-batch loss is the mean of the ranks' (equal-sized) half-batch losses.
        losses = [comm.all_reduce(x.clone(), "avg") for x in losses]
        return dict(losses=losses, grads=grads, params=full_parameters(model),
                    local_fraction=local_numel / full_numel, checkpoint_calls=len(calls),
                    reduce_ops=reduce_ops)
    finally:
        ac.checkpoint, dist.reduce_scatter_single = real_checkpoint, real_rs
        reset_parallel_state()


@pytest.fixture(scope="module", params=rank_backend_params())
def backend_pool(request):
    import phyx

    prev = phyx.get_backend().name, phyx.get_policy()
    phyx.set_backend(request.param)  # the reference runs the same kernels as the ranks
    try:
        ref = single_process(seed=3)
    finally:
        phyx.set_backend(*prev)
    with RankPool(WORLD, env={"PHYX_BACKEND": request.param}, dist_timeout_s=30) as pool:
        yield pool, ref


def _assert_matches(ref: dict, got: dict, what: str) -> None:
    for step in range(STEPS):
        err = rel_l2(got["losses"][step], ref["losses"][step])
        assert err < TOL, f"{what}: loss of step {step} rel {err:.2e}"
        assert got["grads"][step].keys() == ref["grads"][step].keys()
        for n, g in ref["grads"][step].items():
            err = rel_l2(got["grads"][step][n], g)
            assert err < TOL, f"{what}: gradient of {n} at step {step}: rel L2 {err:.2e}"
    for n, p in ref["params"].items():
        err = rel_l2(got["params"][n], p)
        assert err < TOL, f"{what}: updated parameter {n}: rel L2 {err:.2e}"


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
def test_fsdp2_training_equals_single_process(backend_pool, checkpointing):
    pool, ref = backend_pool
    initial = _model(3).state_dict()
    moved = max(rel_l2(ref["params"][n], initial[n]) for n in ref["params"])
    assert moved > 1e-3, "the optimizer steps must change the weights for the comparison to mean much"
    for r, got in enumerate(pool.run(_fsdp_rank, 3, checkpointing)):
        assert 0.45 < got["local_fraction"] < 0.6, f"rank {r} holds {got['local_fraction']:.2f} of the weights"
        assert (got["checkpoint_calls"] > 0) == checkpointing
        # Gradients are summed then divided, never ReduceOp.AVG (which HCCL lacks on some versions).
        assert got["reduce_ops"] and all("SUM" in op for op in got["reduce_ops"]), got["reduce_ops"]
        _assert_matches(ref, got, f"rank {r}, checkpointing={checkpointing}")
