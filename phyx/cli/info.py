"""`phyx info`: which backend was chosen and why, versions, devices, kernel per op."""
from __future__ import annotations

from phyx.cli._common import add_backend_args, print_json


def _cmd_info(args) -> int:
    import platform

    import torch

    import phyx
    from phyx.backend import probe_all
    from phyx.cli._common import setup_backend

    b = setup_backend(args)
    info = {
        "backend": b.name,
        "emulated": b.emulated,
        "why": phyx.selection_reason(),
        "policy": phyx.get_policy(),
        "device_type": b.device_type,
        "process_group_backend": b.dist_backend,
        "visible_devices_env": b.visible_devices_env,
        "devices": b.describe_devices(),
        "versions": {"python": platform.python_version(), **b.versions()},
        "precision_flags": b.precision_flags(),
        "kernels": phyx.ops.chosen_kernels(),
        "available_kernels": {op: [k.name for k in phyx.ops.available_kernels(op)]
                              for op in phyx.ops.OP_NAMES},
        "known_backends": {n: {"available": ok, "detail": why}
                           for n, (ok, why) in probe_all().items()},
    }
    info["hardware"] = b.hardware_info()
    if args.json:
        print_json(info)
        return 0
    print(f"backend   : {info['backend']}" + ("  (EMULATED: proves translation, not NPU numerics)" if b.emulated else ""))
    print(f"why       : {info['why']}")
    print(f"policy    : {info['policy']}")
    print(f"device    : {info['device_type']}  {', '.join(info['devices'])}")
    print(f"collective: {info['process_group_backend']}  (visible devices env: {info['visible_devices_env']})")
    print("versions  : " + ", ".join(f"{k}={v}" for k, v in info["versions"].items()))
    if info["hardware"]:
        print("hardware  : " + ", ".join(f"{k}={v}" for k, v in info["hardware"].items()))
    if info["precision_flags"]:
        print("precision : " + ", ".join(f"{k}={v}" for k, v in info["precision_flags"].items()))
    print("kernels (op -> chosen   [available]):")
    for op, name in info["kernels"].items():
        print(f"  {op:<15} -> {name:<32} {info['available_kernels'][op]}")
    print("backends known:")
    for n, d in info["known_backends"].items():
        print(f"  {n:<13} {'yes' if d['available'] else 'no ':<4} {d['detail']}")
    print("torch     :", torch.__version__)
    return 0


def register(sub) -> None:
    p = sub.add_parser("info", help="which backend was chosen and why, versions, devices, kernels")
    add_backend_args(p)
    p.add_argument("--json", action="store_true", help="print it all as JSON")
    p.set_defaults(func=_cmd_info)
