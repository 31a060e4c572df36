"""Model FLOPs utilisation: the achieved training FLOP/s over the GPU's bf16 peak."""

from __future__ import annotations

import torch

# Dense bf16 tensor-core peak FLOP/s by GPU name fragment (vendor data sheets).
GPU_PEAK_BF16_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
}


def model_flops_utilisation(
    model: torch.nn.Module, seq_len: int, tokens_per_second: float, device: torch.device
) -> float | None:
    """MFU as in PaLM (appendix B): (6N + 12 L H T) FLOPs per token over the GPU's peak.

    N counts every parameter (frozen ones still do forward and input-gradient
    work), L layers, H hidden size, T sequence length. None off CUDA or for a
    GPU whose peak is not in the table.
    """
    if device.type != "cuda" or tokens_per_second <= 0:
        return None
    name = torch.cuda.get_device_name(device)
    peak = next((f for key, f in GPU_PEAK_BF16_FLOPS.items() if key in name), None)
    if peak is None:
        return None
    config = getattr(model, "config", None)
    layers = getattr(config, "num_hidden_layers", 0)
    hidden = getattr(config, "hidden_size", 0)
    n_params = sum(p.numel() for p in model.parameters())
    flops_per_token = 6 * n_params + 12 * layers * hidden * seq_len
    return flops_per_token * tokens_per_second / peak
