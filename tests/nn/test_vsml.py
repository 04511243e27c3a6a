"""VSMLLayer / VSML: shapes, state carry and reset, per-copy vs shared parameters, init per spec."""
import pytest
import torch

from metalearn_ext.nn import VSML, VSMLLayer


def _stream(T=3, L=5, D=6, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, L, D, generator=g), torch.randint(C, (T, L), generator=g)


def test_layer_shapes_and_bias_init():
    layer = VSMLLayer(5, 4, state_size=8, msg_size=6, ticks=2)
    h, c = layer.initial_state(3, torch.Generator().manual_seed(0))
    assert h.shape == c.shape == (3, 5, 4, 8)
    assert (h == 0).all() and (c[..., 4:] == 0).all() and (c[..., :4] != 0).all()
    assert c.abs().max() <= 2 / 5**0.5 + 1e-6  # truncated at 2 std, std = 1/sqrt(A)
    N = 8
    assert torch.allclose(layer.bias[:N], torch.full((N,), -5.0)) and torch.allclose(layer.bias[N : 2 * N], torch.full((N,), 5.0))
    h2, c2, fwd, bwd = layer(h, c, torch.randn(3, 5, 6), torch.randn(3, 4, 6))
    assert h2.shape == c2.shape == (3, 5, 4, 8) and fwd.shape == (3, 4, 6) and bwd.shape == (3, 5, 6)


@pytest.mark.parametrize("feedback", ["previous", "extra_tick"])
def test_learn_shapes_and_losses(feedback):
    torch.manual_seed(0)
    m = VSML([6, 4, 3], state_size=4, msg_size=4, feedback=feedback)
    x, y = _stream()
    logits, losses = m.learn(x, y)
    assert logits.shape == (3, 5, 3) and losses.shape == (3, 5)
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), y.reshape(-1), reduction="none")
    torch.testing.assert_close(losses.reshape(-1), ref)
    losses.mean().backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if not n.startswith("layers.0.bwd_msg"))


def test_state_carries_across_calls_and_resets():
    torch.manual_seed(0)
    m = VSML([6, 3], state_size=4, msg_size=4)
    x, y = _stream(L=8)
    g = lambda: torch.Generator().manual_seed(1)
    whole, _ = m.learn(x, y, generator=g())
    m.reset_state()
    first, _ = m.learn(x[:, :5], y[:, :5], generator=g())
    rest, _ = m.learn(x[:, 5:], y[:, 5:])
    torch.testing.assert_close(torch.cat([first, rest], 1), whole)
    m.reset_state()
    again, _ = m.learn(x, y, generator=g())
    torch.testing.assert_close(again, whole)
    with pytest.raises(ValueError, match="reset_state"):
        m.learn(x[:2], y[:2])


def test_prediction_precedes_its_label():
    """Changing the label of example s cannot change the prediction for example s."""
    torch.manual_seed(0)
    m = VSML([6, 3], state_size=4, msg_size=4)
    x, y = _stream(T=1, L=6)
    a, _ = m.learn(x, y, generator=torch.Generator().manual_seed(0))
    y2 = y.clone()
    y2[0, 3] = (y[0, 3] + 1) % 3
    m.reset_state()
    b, _ = m.learn(x, y2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_per_copy_parameters_equal_shared_when_copies_are_equal():
    torch.manual_seed(0)
    m = VSML([6, 5, 3], state_size=4, msg_size=4)
    x, y = _stream(T=4)
    shared, _ = m.learn(x, y, generator=torch.Generator().manual_seed(2))
    m.reset_state()
    theta = m.parameter_vector().detach().expand(4, -1).clone()
    per_copy, _ = m.learn(x, y, params=theta, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(per_copy, shared, rtol=1e-5, atol=1e-5)
    # and a copy with other parameters gives other predictions, leaving the rest alone
    m.reset_state()
    theta[1] += 0.1
    mixed, _ = m.learn(x, y, params=theta, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(mixed[[0, 2, 3]], shared[[0, 2, 3]], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mixed[1], shared[1])


def test_input_standardization_and_errors():
    m = VSML([6, 3], state_size=4, msg_size=4)
    x, y = _stream()
    mean, std = torch.randn(6), torch.rand(6) + 0.5
    g = lambda: torch.Generator().manual_seed(0)
    m.set_input_stats(mean, std)
    a, _ = m.learn(x * std + mean, y, generator=g())
    m.set_input_stats(torch.zeros(6), torch.ones(6))
    m.reset_state()
    b, _ = m.learn(x, y, generator=g())
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    m.reset_state()
    with pytest.raises(ValueError, match=r"stream_x must be of shape \(T, L, 6\)"):
        m.learn(torch.randn(3, 5, 7), y)
    with pytest.raises(ValueError, match="stream_y"):
        m.learn(x, y[:, :4])
    with pytest.raises(ValueError, match="feedback"):
        VSML([6, 3], feedback="sideways")
    with pytest.raises(ValueError, match=r"theta must be of shape"):
        m.learn(x, y, params=torch.zeros(3, 7))
