"""Benchmarks: op throughput (`ops`), model steps (`models`), CPU dispatch overhead (`dispatch`),
and the cross-machine table (`merge`). `phyx bench ...` is the command line (phyx/cli/bench.py);
each run writes one JSON file per machine (see docs/architecture.md, 'Benchmarks')."""
