"""nn.MANN: shapes, bad input, the label offset (no peeking at y_s), the least-used row really
zeroed before the write, no NaN from the 1e-6 memory (or a zero one), the ops' backends agree, the fused
episode and the step-by-step loop agree."""
import pytest
import torch

import metalearn_ext
from metalearn_ext.ops.mann_episode import reference as loop_module
from metalearn_ext.nn import MANN
from metalearn_ext.nn.mann import previous_labels
from metalearn_ext.ops import mann_memory_step as real_step

B, L, D, C = 3, 12, 20, 4


def _small(**kw) -> MANN:
    torch.manual_seed(0)
    return MANN(D, C, **{"hidden": 16, "memory_slots": 8, "memory_width": 6, "read_heads": 2, **kw})


def _episode(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, L, D, generator=g), torch.randint(0, C, (B, L), generator=g)


def test_shapes_and_the_papers_defaults():
    m = MANN(400, 5)
    assert (m.hidden, m.slots, m.width, m.heads, m.gamma, m.memory_init) == (200, 128, 40, 4, 0.95, 1e-6)
    x, y = torch.rand(2, 7, 400), torch.randint(0, 5, (2, 7))
    logits, losses = m.learn(x, y)
    assert logits.shape == (2, 7, 5) and losses.shape == (2, 7)
    assert m(x, previous_labels(y)).shape == (2, 7, 5)


def test_previous_labels_shift_by_one_with_none_first():
    y = torch.tensor([[2, 0, 1], [1, 1, 0]])
    assert previous_labels(y).tolist() == [[-1, 2, 0], [-1, 1, 1]]


def test_the_prediction_at_step_s_never_sees_y_s_or_later():
    m = _small()
    x, y = _episode()
    later = y.clone()
    later[:, 5:] = (later[:, 5:] + 1) % C
    with torch.no_grad():
        a, b = m.learn(x, y)[0], m.learn(x, later)[0]
    assert torch.equal(a[:, :6], b[:, :6])  # logits of steps 0..5 depend on labels 0..4 only
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_episodes_of_a_batch_are_independent():
    m = _small()
    x, y = _episode()
    with torch.no_grad():
        whole = m.learn(x, y)[0]
        one = m.learn(x[1:2], y[1:2])[0]
    torch.testing.assert_close(whole[1:2], one, rtol=1e-5, atol=1e-6)


def test_the_least_used_row_is_zeroed_before_the_write(monkeypatch):
    """In the model's own calls: the slot of smallest usage holds exactly what was written into it."""
    calls = []

    def recording(memory, usage, read_weights, keys, add, alpha, gamma, backend=None):
        out = real_step(memory, usage, read_weights, keys, add, alpha, gamma, backend=backend)
        calls.append((memory.detach(), usage.detach(), add.detach(), out[0].detach(), out[4].detach()))
        return out

    monkeypatch.setattr(loop_module, "mann_memory_step", recording)
    m = _small(memory_init=0.5, fused=False)  # a large initial value, so that a row not zeroed shows
    x, y = _episode()
    with torch.no_grad():
        m.learn(x, y)
    assert len(calls) == L
    for memory, usage, add, new_memory, write_weights in calls[1:]:
        slot = torch.sort(usage, dim=1, stable=True).indices[:, 0]  # (B,)
        rows = torch.arange(B)
        written = torch.einsum("bh,bhw->bw", write_weights[rows, :, slot], add)
        torch.testing.assert_close(new_memory[rows, slot], written, rtol=1e-5, atol=1e-6)
        assert (memory[rows, slot] - written).abs().max() > 1e-2  # the old content was really there
        others = torch.ones_like(usage, dtype=torch.bool)
        others[rows, slot] = False
        kept = memory + torch.einsum("bhs,bhw->bsw", write_weights, add)
        torch.testing.assert_close(new_memory[others], kept[others], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("memory_init", [1e-6, 0.0])
def test_no_nan_from_a_tiny_or_zero_memory(memory_init):
    m = _small(memory_init=memory_init)
    x, y = _episode()
    _, losses = m.learn(x, y)
    losses.mean().backward()
    assert torch.isfinite(losses).all()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in m.parameters())


@pytest.mark.parametrize("fused", [True, False])
def test_default_backend_and_reference_agree(fused):
    """The default (on a CPU with the extension: the fused episode, or the loop of cpp memory steps) against the
    loop of reference steps, loss and every parameter's gradient."""
    x, y = _episode()
    a, b = _small(fused=fused), _small(backend="reference")
    la, lb = a.learn(x, y)[1].mean(), b.learn(x, y)[1].mean()
    la.backward()
    lb.backward()
    torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6)


def test_bad_input_names_the_argument_and_shape():
    m = _small()
    x, y = _episode()
    with pytest.raises(ValueError, match=r"inputs must be of shape \(B, L, D\) = \(B, L, 20\), got \(3, 12\)"):
        m.learn(x[..., 0], y)
    with pytest.raises(ValueError, match=r"inputs must be of shape \(B, L, D\) = \(B, L, 20\), got \(3, 12, 19\)"):
        m(x[..., :19], previous_labels(y))
    with pytest.raises(ValueError, match=r"labels must be of shape \(B, L\) = \(3, 12\), got \(3, 11\)"):
        m.learn(x, y[:, :11])
    with pytest.raises(TypeError, match="prev_labels must be int64"):
        m(x, previous_labels(y).float())
    with pytest.raises(ValueError, match=r"prev_labels must be in -1\.\.3, got values in -1\.\.4"):
        m(x, previous_labels(y).clamp_max(3) + (torch.arange(L) == 4).long())
    with pytest.raises(ValueError, match="read_heads \\(9\\) must be <= memory_slots \\(8\\)"):
        MANN(D, C, memory_slots=8, read_heads=9)
    with pytest.raises(ValueError, match="hidden must be a positive int, got 0"):
        MANN(D, C, hidden=0)


def test_the_fused_episode_is_what_runs_by_default_on_a_cpu(monkeypatch):
    if not metalearn_ext.backends()["cpp"].available:
        pytest.skip(metalearn_ext.backends()["cpp"].reason)
    stepped = []
    monkeypatch.setattr(loop_module, "mann_memory_step", lambda *a, **k: stepped.append(1) or real_step(*a, **k))
    x, y = _episode()
    _small().learn(x, y)
    assert not stepped  # one mann_episode call, no per-step memory op
    _small(fused=False).learn(x, y)
    assert len(stepped) == L
