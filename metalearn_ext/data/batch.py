"""What every batch dataclass shares: moving its tensors to a device."""
from __future__ import annotations

import dataclasses
from typing import TypeVar

import torch
from torch import Tensor

__all__ = ["batch_to"]

B = TypeVar("B")


def batch_to(batch: B, device: torch.device | str, non_blocking: bool = False) -> B:
    """A copy of the dataclass ``batch`` with every tensor field on ``device`` (other fields as they are)."""
    return dataclasses.replace(batch, **{
        f.name: v.to(device, non_blocking=non_blocking)
        for f in dataclasses.fields(batch) if isinstance(v := getattr(batch, f.name), Tensor)})
