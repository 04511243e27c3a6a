"""nn.MetaNet: the gradient preprocessing, shapes and bad input, the per-example support gradients of
one vmap(grad) call equal to one backward pass per example, and the same meta-loss and
meta-gradient either way."""
import math

import pytest
import torch

from metalearn_ext.nn import MetaNet
from metalearn_ext.nn.metanet_parts import (
    AugmentedConvNet,
    KeyMetaLearner,
    preprocess_gradients,
)

SMALL = dict(max_way=6, image_size=8, hidden=8, depth=3, embed=16, meta_hidden=6)


def _episode(n=3, k=1, q=2, size=8, e=None, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    lead = () if e is None else (e,)
    sx = torch.rand(*lead, n * k, 1, size, size, generator=g, dtype=dtype)
    qx = torch.rand(*lead, n * q, 1, size, size, generator=g, dtype=dtype)
    sy = torch.arange(n).repeat_interleave(k).expand(*lead, -1).clone()
    qy = torch.arange(n).repeat_interleave(q).expand(*lead, -1).clone()
    return sx, sy, qx, qy


def test_preprocessing_is_log_magnitude_and_clipped_scaled_gradient():
    g = torch.tensor([0.0, 1.0, -1e-4, 2e-3, -50.0])
    out = preprocess_gradients(g, p=7.0)
    assert out.shape == (5, 2)
    expected_mag = [-1.0, 0.0, -1.0, math.log(2e-3) / 7, math.log(50.0) / 7]
    expected_sign = [0.0, 1.0, -1e-4 * math.exp(7), 1.0, -1.0]
    torch.testing.assert_close(out[:, 0], torch.tensor(expected_mag), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[:, 1], torch.tensor(expected_sign), rtol=1e-5, atol=1e-6)


def test_augmented_net_pools_28_to_1_and_runs_per_example_fast_weights():
    net = AugmentedConvNet(image_size=28, out=5)
    assert net.fc.in_features == 64  # 28 -> 14 -> 7 -> 4 -> 2 -> 1 with rounding-up pools
    x = torch.rand(3, 1, 28, 28)
    fast = {n: torch.randn(3, *p.shape) * 0.01 for n, p in net.named_parameters()}
    out = net(x, fast, per_example=True, n_out=4)
    assert out.shape == (3, 4)
    # example 1 alone with its own fast weights gives the same
    one = net(x[1:2], {n: f[1] for n, f in fast.items()}, n_out=4)
    torch.testing.assert_close(out[1:2], one, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"x must be of shape \(B, 1, 28, 28\)"):
        net(torch.rand(2, 1, 27, 27))


def test_predict_shapes_single_and_batched_and_under_no_grad():
    torch.manual_seed(0)
    model = MetaNet(**SMALL)
    sx, sy, qx, _ = _episode()
    assert model.predict(sx, sy, qx).shape == (6, 3)
    bx, by, bq, bqy = _episode(e=2)
    with torch.no_grad():
        logits = model.predict(bx, by, bq)
    assert logits.shape == (2, 6, 3) and torch.isfinite(logits).all()
    torch.testing.assert_close(logits[0], model.predict(bx[0], by[0], bq[0]).detach(), rtol=1e-5, atol=1e-6)
    loss, acc = model.loss(bx, by, bq, bqy)
    assert loss.dim() == 0 and loss.requires_grad and 0 <= acc <= 1
    assert model.predict(sx, sy, qx, n_way=5).shape == (6, 5)


def test_bad_input_names_the_argument():
    model = MetaNet(**SMALL)
    sx, sy, qx, qy = _episode()
    with pytest.raises(ValueError, match="max_way >= 7"):
        model.predict(sx, sy, qx, n_way=7)
    with pytest.raises(ValueError, match="query_x must be of shape"):
        model.predict(sx, sy, qx[:, :, :4])
    with pytest.raises(ValueError, match="support_y must hold integer class labels"):
        model.predict(sx, sy.float(), qx)
    with pytest.raises(ValueError, match="query_y must be of shape"):
        model.loss(sx, sy, qx, qy[:3])
    with pytest.raises(ValueError, match=r"one episode only: support_y must be of shape \(S,\)"):
        model.support_gradients(sx[None], sy[None], 3)
    with pytest.raises(ValueError, match=r"n_way must be an int in 1\.\.6 \(max_way\)"):
        model.support_gradients(sx, sy, 7)
    with pytest.raises(ValueError, match="mode must be one of"):
        model.support_gradients(sx, sy, 3, mode="twice")
    with pytest.raises(ValueError, match="gradients must be one of"):
        MetaNet(**SMALL, gradients="twice")
    with pytest.raises(ValueError, match=r"fast_layers must be None or an int in 2\.\.5"):
        MetaNet(**SMALL, fast_layers=1)
    with pytest.raises(ValueError, match="max_way must be an int >= 2"):
        MetaNet(max_way=1)
    with pytest.raises(ValueError, match="hidden must be a positive int"):
        MetaNet(hidden=0)
    with pytest.raises(ValueError, match=r"g must be of shape \(S, P, 2\)"):
        KeyMetaLearner()(torch.rand(3, 4))


@pytest.mark.parametrize("fast_layers, channels_last", [(None, False), (2, False), (None, True)])
def test_vmap_per_example_gradients_equal_one_backward_per_example(fast_layers, channels_last):
    torch.manual_seed(0)
    model = MetaNet(**SMALL, fast_layers=fast_layers, channels_last=channels_last).double()
    sx, sy, qx, qy = _episode(n=4, k=2, dtype=torch.float64)
    got = {}
    for mode in ("vmap", "loop"):
        model.gradients = mode
        base, key = model.support_gradients(sx, sy, 4)
        loss, _ = model.loss(sx, sy, qx, qy)
        params = [p for p in model.parameters()]
        meta = torch.autograd.grad(loss, params, allow_unused=True)
        got[mode] = (base, key, loss.detach(), meta)
    (b1, k1, l1, m1), (b2, k2, l2, m2) = got["vmap"], got["loop"]
    assert list(b1) == list(b2) and list(k1) == list(k2)
    assert all(g.shape[0] == 8 for g in [*b1.values(), *k1.values()])  # one gradient per support example
    expected_base = 10 if fast_layers is None else 4  # weight + bias of 5 or 2 layers
    assert len(b1) == expected_base and len(k1) == expected_base - 2  # the key net's output layer has none
    for name in b1:
        torch.testing.assert_close(b1[name], b2[name], rtol=1e-10, atol=1e-12)
    for name in k1:
        torch.testing.assert_close(k1[name], k2[name], rtol=1e-10, atol=1e-12)
    # support examples of different classes do give different gradients (not one gradient copied S times)
    assert not torch.allclose(b1["head.weight"][0], b1["head.weight"][2])
    torch.testing.assert_close(l1, l2, rtol=1e-12, atol=0)
    for a, b in zip(m1, m2):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_per_example_gradient_is_that_examples_own_loss_gradient():
    """Gradient i of the vmap call = the gradient of the base learner's loss on example i alone."""
    torch.manual_seed(1)
    model = MetaNet(**SMALL, fast_layers=2).double()
    sx, sy, _, _ = _episode(n=3, dtype=torch.float64)
    base, _ = model.support_gradients(sx, sy, 3)
    i = 1
    logits = model.base(sx[i:i + 1], n_out=3)
    loss = torch.nn.functional.cross_entropy(logits, sy[i:i + 1])
    head_w = torch.autograd.grad(loss, model.base.head.weight)[0]
    torch.testing.assert_close(base["head.weight"][i], head_w)
    assert base["head.weight"][i][3:].abs().max() == 0  # rows beyond the episode's 3 ways are unused


def test_attention_scale_sharpens_the_attention_and_is_learned_when_asked():
    """The factor on the cosines multiplies the attention's logits: 1 is the paper's model; a learned
    factor starts at attention_scale, gets a meta-gradient, and a larger factor changes the logits."""
    sx, sy, qx, qy = _episode(n=4, dtype=torch.float64)
    torch.manual_seed(2)
    paper = MetaNet(**SMALL, fast_layers=2).double()
    assert paper.attention_scale == 1.0 and paper.log_attention_scale is None
    assert not any("attention" in n for n, _ in paper.named_parameters())
    torch.manual_seed(2)
    learned = MetaNet(**SMALL, fast_layers=2, attention_scale=1.0, learn_attention_scale=True).double()
    torch.testing.assert_close(learned.predict(sx, sy, qx), paper.predict(sx, sy, qx))  # same start, same logits
    loss, _ = learned.loss(sx, sy, qx, qy)
    (g,) = torch.autograd.grad(loss, [learned.log_attention_scale])
    assert torch.isfinite(g) and g != 0
    torch.manual_seed(2)
    sharp = MetaNet(**SMALL, fast_layers=2, attention_scale=50.0).double()
    assert not torch.allclose(sharp.predict(sx, sy, qx), paper.predict(sx, sy, qx))
    torch.manual_seed(2)
    sharp_learned = MetaNet(**SMALL, fast_layers=2, attention_scale=50.0, learn_attention_scale=True).double()
    torch.testing.assert_close(sharp_learned.attention_scale.detach(), torch.tensor(50.0, dtype=torch.float64))
    torch.testing.assert_close(sharp_learned.predict(sx, sy, qx), sharp.predict(sx, sy, qx))
    for bad in (0.0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="attention_scale must be a positive finite number"):
            MetaNet(**SMALL, attention_scale=bad)
    with pytest.raises(ValueError, match="learn_attention_scale must be a bool"):
        MetaNet(**SMALL, learn_attention_scale=1)


@pytest.mark.parametrize("center", [False, True])
def test_centred_keys_ignore_an_offset_shared_by_every_key(center):
    """center_keys subtracts the support keys' mean before the cosines: an offset added to every key (what
    makes a fresh model's keys nearly parallel) then leaves the logits unchanged; the paper's cosines move."""
    sx, sy, qx, _ = _episode(n=4, dtype=torch.float64)
    torch.manual_seed(3)
    model = MetaNet(**SMALL, fast_layers=2, center_keys=center).double()
    before = model.predict(sx, sy, qx).detach()
    features = model.key.features
    offset = torch.linspace(1.0, 3.0, SMALL["embed"], dtype=torch.float64)


    def shifted(x, fast=None, per_example=False):  # the keys (read with the key fast weights) only, not the
        out = features(x, fast, per_example)         # key net's own outputs, whose gradients make those weights
        return out if fast is None else out + offset

    model.key.features = shifted
    after = model.predict(sx, sy, qx).detach()
    assert torch.isfinite(after).all()
    if center:
        torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-12)
    else:
        assert not torch.allclose(after, before, rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="center_keys must be a bool"):
        MetaNet(**SMALL, center_keys=1)


def test_anchored_fast_weights_start_without_a_common_offset():
    """anchor_fast_weights=v: a zero gradient maps to the fast weight v at init (base MLP exactly; key LSTM
    exactly at max_way support examples), and across seeds the fresh base fast weights of an episode have
    no common offset of the seed's choosing; without it (the default) some seed's offset is several times
    their spread. Only the two output biases differ from the default init."""
    g0 = preprocess_gradients(torch.zeros(()), 7.0)
    sx, sy, qx, _ = _episode(n=6)
    offsets = {None: [], 0.0: []}
    for anchor in (None, 0.0, -1.0):
        for seed in range(6):
            torch.manual_seed(seed)
            model = MetaNet(**SMALL, fast_layers=2, anchor_fast_weights=anchor)
            if anchor is not None:
                torch.testing.assert_close(model.base_learner(g0[None]), torch.tensor([anchor]))
                key = model.key_learner(g0.expand(SMALL["max_way"], 1, 2).contiguous())
                torch.testing.assert_close(key, torch.tensor([anchor]))
            if anchor in offsets:
                g_base, _ = model.support_gradients(sx, sy, 6)
                fast = model.base_learner(preprocess_gradients(model._flat(g_base), model.p))  # (S, P)
                offsets[anchor].append((fast.mean() / fast.std()).abs().item())
    assert max(offsets[None]) > 2.0, offsets
    assert max(offsets[0.0]) < 1.0, offsets
    torch.manual_seed(0)
    a = MetaNet(**SMALL, anchor_fast_weights=-1)
    torch.manual_seed(0)
    b = MetaNet(**SMALL)
    changed = [n for n, p in a.named_parameters() if not torch.equal(p, b.state_dict()[n])]
    assert changed == ["base_learner.net.4.bias", "key_learner.out.bias"]  # the same draws otherwise
    for bad in ("yes", True, float("inf")):
        with pytest.raises(ValueError, match="anchor_fast_weights must be None or a finite number"):
            MetaNet(**SMALL, anchor_fast_weights=bad)
