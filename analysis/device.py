"""The ``device`` setting (cpu | cuda | auto) resolved to a torch device, with one clear line when it cannot be.

cuda   a CUDA GPU must be visible to torch, else ConfigError (one line naming the field)
auto   cuda if one is visible, else cpu; the choice is stated in the result's notes (no silent fallback)

GPU_ENGINE is False in this version: the engine's GPU path was not built (no GPU to test it on), so ``cuda``
is refused with one line even where a GPU exists, and ``auto`` says in the notes that it ran on cpu.
"""
from __future__ import annotations

import torch

from rnn_models.config import ConfigError

GPU_ENGINE = False


def cuda_available() -> bool:
    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> tuple[torch.device, str | None]:
    """(torch device, note or None) for the config's ``device`` field."""
    if device == "cpu":
        return torch.device("cpu"), None
    if device == "cuda":
        if not cuda_available():
            raise ConfigError("device='cuda' needs a CUDA GPU, and torch sees none here; use device=cpu or auto")
        if not GPU_ENGINE:
            raise ConfigError("device='cuda': the analysis engine has no GPU path yet; use device=cpu or auto")
        return torch.device("cuda"), None
    if device == "auto":
        if cuda_available() and not GPU_ENGINE:
            return torch.device("cpu"), "device auto: a CUDA GPU is visible but the engine has no GPU path yet; ran on cpu"
        if cuda_available():
            return torch.device("cuda"), f"device auto: ran on cuda ({torch.cuda.get_device_name(0)})"
        return torch.device("cpu"), "device auto: no CUDA GPU visible, ran on cpu"
    raise ConfigError(f"device={device!r} must be one of cpu, cuda, auto")
