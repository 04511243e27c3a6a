"""Comparing meta-batches field by field."""
from __future__ import annotations

import dataclasses

import torch


def tensor_fields(batch) -> dict[str, torch.Tensor]:
    return {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)
            if isinstance(getattr(batch, f.name), torch.Tensor)}


def assert_same(a, b) -> None:
    """Every tensor field of the batches a and b is equal (and there is at least one)."""
    fa, fb = tensor_fields(a), tensor_fields(b)
    assert fa and fa.keys() == fb.keys()
    for name in fa:
        assert torch.equal(fa[name], fb[name]), name


def assert_split_equals_whole(task, **kw) -> None:
    """Items [0, 1, 2, 3] drawn at once equal [0, 1] then [2, 3] (two processes), and differ from
    the same items of another step."""
    whole = task.sample([0, 1, 2, 3], **kw)
    halves = [tensor_fields(task.sample(ix, **kw)) for ix in ([0, 1], [2, 3])]
    for name, t in tensor_fields(whole).items():
        assert torch.equal(t, torch.cat([halves[0][name], halves[1][name]])), name
    other = task.sample([0, 1, 2, 3], **{**kw, "step": kw["step"] + 1})
    assert not all(torch.equal(t, tensor_fields(other)[n]) for n, t in tensor_fields(whole).items())
