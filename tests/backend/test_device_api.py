import torch

import phyx
from phyx import device


def test_cpu_device_api_is_usable_without_vendor_calls():
    phyx.set_backend("cpu", "fast")
    assert device.device_type() == "cpu"
    assert device.torch_device() == torch.device("cpu")
    device.set_device(0)
    device.synchronize()
    device.manual_seed(3)
    a = torch.randn(3)
    device.manual_seed(3)
    assert torch.equal(a, torch.randn(3))
    start, end = device.Event(enable_timing=True), device.Event(enable_timing=True)
    start.record()
    torch.ones(100).sum()
    end.record()
    end.synchronize()
    assert start.elapsed_time(end) >= 0
    with device.Stream() as s:
        s.synchronize()
    assert device.memory_allocated() == 0 and device.max_memory_allocated() == 0
    device.reset_peak_memory_stats()
    device.empty_cache()
    with device.autocast(torch.bfloat16):
        y = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert y.dtype == torch.bfloat16
