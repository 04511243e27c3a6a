"""nn.BLUR: shapes and errors, the exactness check of specs/blur.md §4 (one step = one SGD step of a
linear model), the backprop genome = SGD on a deep linear network, learn() without gradients, state
carry, per-copy parameters."""
import pytest
import torch
import torch.nn.functional as F

from metalearn_ext.nn import BLUR
from metalearn_ext.nn.blur_genome import backprop_genome_values


def _batches(T=3, S=4, B=5, D=6, C=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, S, B, D, generator=g, dtype=dtype), torch.randint(C, (T, S, B), generator=g)


def test_shapes_and_meta_gradients():
    torch.manual_seed(0)
    m = BLUR([6, 4, 3], states=3, per_layer_genome=True, learn_init_scale=True)
    x, y = _batches()
    w0 = m.initial_state(3, torch.Generator().manual_seed(0))
    assert [tuple(w.shape) for w in w0] == [(3, 6, 4, 3), (3, 4, 3, 3)]
    torch.testing.assert_close(w0[0].norm(dim=1), torch.ones(3, 4, 3))  # unit columns times init scale 1
    w, logits = m.unroll(w0, x, y)
    assert logits.shape == (3, 4, 5, 3) and [tuple(v.shape) for v in w] == [tuple(v.shape) for v in w0]
    F.cross_entropy(m.predict(x[:, 0], w).transpose(1, 2), y[:, 0]).backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    assert set(grads) == {"genome.f", "genome.eta", "genome.f_hebb", "genome.eta_hebb", "genome.nu", "genome.mu",
                          "genome.nu_hebb", "genome.mu_hebb", "log_init_scale", "log_logit_scale"}
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())
    assert m.genome.nu.shape == (2, 3, 3) and m.genome.f.shape == (2,)


def test_bad_arguments_raise_naming_them():
    with pytest.raises(ValueError, match="layer_sizes"):
        BLUR([6])
    with pytest.raises(ValueError, match="states must be >= 2"):
        BLUR([6, 3], states=1)
    with pytest.raises(ValueError, match="label_encoding"):
        BLUR([6, 3], label_encoding="onehot")
    with pytest.raises(ValueError, match="hidden_activation"):
        BLUR([6, 3], hidden_activation="relu6")
    m = BLUR([6, 3])
    x, y = _batches()
    with pytest.raises(ValueError, match=r"inputs must be of shape \(T, steps, batch, 6\)"):
        m.learn(x[..., :5], y)
    with pytest.raises(ValueError, match=r"labels must be of shape \(T, steps, batch\) = \(3, 4, 5\)"):
        m.learn(x, y[:, :2])
    with pytest.raises(TypeError, match="int64"):
        m.learn(x, y.int())
    with pytest.raises(ValueError, match="nothing learned yet"):
        m.predict(x[:, 0])
    with pytest.raises(ValueError, match=r"inputs must be of shape \(T, n, 6\)"):
        m.predict(x)
    m.learn(x, y)
    with pytest.raises(ValueError, match="reset_state"):
        m.learn(x[:2], y[:2])
    with pytest.raises(ValueError, match=r"theta must be of shape \(T, "):
        m.per_copy_parameters(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="2 generators for 3 copies"):
        m.initial_state(3, [torch.Generator(), torch.Generator()])


def test_spec_exactness_check_is_one_sgd_step_of_a_linear_model():
    """specs/blur.md §4 in float64: k = 2, identity σ, one layer, the genome given there; the forward pass
    gives ŷ = x·w, channel 0 takes exactly one SGD step on ½Σ_b‖y − ŷ‖², channel 1 is unchanged."""
    m = BLUR([6, 3], normalize=False, hidden_activation="identity", output_activation="identity").double()
    lr = 0.03
    e = lambda *rows: torch.tensor(rows, dtype=torch.float64)
    m.genome.load_values({"f": e(1.0), "eta": e(1.0), "f_hebb": e(1.0), "eta_hebb": e(lr), "nu": e([1, 0], [0, 0]),
                          "mu": torch.zeros(2, 2, dtype=torch.float64), "nu_hebb": e([1, 0], [0, 0]),
                          "mu_hebb": e([-1, 1], [0, 0])})
    x, y = _batches(T=2, S=1, B=7, dtype=torch.float64)
    w = [torch.randn(2, 6, 3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)]
    onehot = F.one_hot(y[:, 0], 3).double()
    new, pred = m.learning_step(w, x[:, 0], onehot)
    torch.testing.assert_close(pred, x[:, 0] @ w[0][..., 0], rtol=0, atol=1e-14)
    W = w[0][..., 0].clone().requires_grad_()
    (g,) = torch.autograd.grad(0.5 * ((onehot - x[:, 0] @ W) ** 2).sum(), W)
    torch.testing.assert_close(new[0][..., 0], W - lr * g, rtol=0, atol=1e-14)
    assert torch.equal(new[0][..., 1], w[0][..., 1])


def _sgd_linear_net(weights, x, onehot, lr):
    """Autograd SGD steps on ½Σ_b‖y − x W_0 W_1 …‖² per copy: weights (T, n_l, n_{l+1})."""
    Ws = [w.clone() for w in weights]
    for s in range(x.shape[1]):
        leaves = [W.requires_grad_() for W in Ws]
        h = x[:, s]
        for W in leaves:
            h = h @ W
        grads = torch.autograd.grad(0.5 * ((onehot[:, s] - h) ** 2).sum(), leaves)
        Ws = [(W - lr * g).detach() for W, g in zip(leaves, grads)]
    return Ws


@pytest.mark.parametrize("sizes", [[6, 3], [6, 5, 3], [6, 5, 4, 3]], ids=["1-layer", "2-layer", "3-layer"])
def test_backprop_genome_is_sgd_on_a_deep_linear_network(sizes):
    """Conditions (see backprop_genome_values): identity activations, no normalization, channels equal at
    init, squared error of one-hot labels, no biases. Then several BLUR steps = as many SGD steps.
    (lr = 2⁻⁵: the genome is stored in float32 before .double(), and 2⁻⁵ survives that exactly.)"""
    lr = 2**-5
    m = BLUR.backprop(sizes, lr).double()
    x, y = _batches(T=2, S=3, B=4, D=sizes[0], C=sizes[-1], dtype=torch.float64)
    w0 = m.initial_state(2, torch.Generator().manual_seed(3))
    assert all(torch.equal(w[..., 0], w[..., 1]) for w in w0)
    new, _ = m.unroll(w0, x, y)
    ref = _sgd_linear_net([w[..., 0] for w in w0], x, F.one_hot(y, sizes[-1]).double(), lr)
    for w, r in zip(new, ref):
        torch.testing.assert_close(w[..., 0], r, rtol=0, atol=1e-12)
        torch.testing.assert_close(w[..., 1], r, rtol=0, atol=1e-12)


def test_backprop_genome_values_with_extra_states_stay_exact():
    lr = 2**-5
    m = BLUR.backprop([6, 5, 3], lr, states=4).double()
    x, y = _batches(T=1, S=2, B=4, dtype=torch.float64)
    w0 = m.initial_state(1, torch.Generator().manual_seed(3))
    new, _ = m.unroll(w0, x, y)
    ref = _sgd_linear_net([w[..., 0] for w in w0], x, F.one_hot(y, 3).double(), lr)
    for w, r in zip(new, ref):
        torch.testing.assert_close(w[..., 0], r, rtol=0, atol=1e-12)
    assert backprop_genome_values(4, lr)["nu"][2:].abs().sum() == 0


def test_learn_runs_without_gradients_and_carries_its_state():
    torch.manual_seed(0)
    m = BLUR([6, 4, 3], learn_init_scale=True)
    x, y = _batches(S=6)
    g = lambda: torch.Generator().manual_seed(1)
    whole = m.learn(x, y, generator=g())
    assert all(not w.requires_grad and w.grad_fn is None for w in m.state)
    assert not whole.requires_grad
    after_whole = [w.clone() for w in m.state]
    m.reset_state()
    first = m.learn(x[:, :2], y[:, :2], generator=g())
    rest = m.learn(x[:, 2:], y[:, 2:])
    torch.testing.assert_close(torch.cat([first, rest], 1), whole)
    for a, b in zip(m.state, after_whole):
        torch.testing.assert_close(a, b)
    assert m.predict(x[:, 0]).shape == (3, 5, 3)


def test_prediction_precedes_its_label():
    torch.manual_seed(0)
    m = BLUR([6, 4, 3])
    x, y = _batches(T=1, S=4)
    a = m.learn(x, y, generator=torch.Generator().manual_seed(0))
    y2 = y.clone()
    y2[:, 2] = (y2[:, 2] + 1) % 3
    m.reset_state()
    b = m.learn(x, y2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3], b[:, 3])


@pytest.mark.parametrize("learn_init_scale", [False, True])
def test_per_copy_parameters_equal_shared_ones_when_equal(learn_init_scale):
    """ES members are per-copy parameters: copies of θ must behave exactly as the shared θ."""
    torch.manual_seed(0)
    m = BLUR([6, 4, 3], per_layer_genome=True, learn_init_scale=learn_init_scale, label_encoding="pm1")
    x, y = _batches()
    theta = torch.nn.utils.parameters_to_vector(m.parameters()).detach().expand(3, -1)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(3)]
    with torch.no_grad():
        shared = m.unroll(m.initial_state(3, gens()), x, y)
        copies = m.unroll(m.initial_state(3, gens(), theta), x, y, theta)
    torch.testing.assert_close(copies[1], shared[1])
    for a, b in zip(copies[0], shared[0]):
        torch.testing.assert_close(a, b)
    perturbed = theta.clone()
    perturbed[1] += 0.1
    with torch.no_grad():
        other = m.unroll(m.initial_state(3, gens(), perturbed), x, y, perturbed)[1]
    torch.testing.assert_close(other[[0, 2]], shared[1][[0, 2]])
    assert not torch.allclose(other[1], shared[1][1])


def test_a_copys_initial_synapses_do_not_depend_on_the_others():
    m = BLUR([6, 4, 3])
    both = m.initial_state(2, [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)])
    alone = m.initial_state(1, [torch.Generator().manual_seed(6)])
    for a, b in zip(both, alone):
        torch.testing.assert_close(a[1:], b)
