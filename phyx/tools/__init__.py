"""phyx.tools: the tooling built on the runtime (parity, bench, porting, certify).

Nothing in the runtime (backend, kernels, ops, comm, device, parallel, models, pipelines, io)
imports from here; tools import the runtime."""
