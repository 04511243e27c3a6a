"""MAML on torch.func: meta-gradients against a hand-unrolled computation and finite differences
(second order really second order, first order really first order), vmap == loop, evaluation
under no_grad, input checks, flat memory over 50 second-order meta-iterations, and learning
(sinusoid regression; 5-way 1-shot digits)."""
from __future__ import annotations

import gc
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalearn_ext.data import EpisodeSampler, ImageDataset, load_digits, sample_sinusoid_tasks
from metalearn_ext.nn import MAML, MLP, Conv4

E, N, K, Q = 3, 3, 2, 4


def _tasks(shape=(2,), seed=0, dtype=torch.float64, e=E, n=N, k=K, q=Q):
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(e, n * k, *shape, generator=g, dtype=dtype)
    qx = torch.randn(e, n * q, *shape, generator=g, dtype=dtype)
    sy = torch.arange(n).repeat_interleave(k).expand(e, -1).clone()
    qy = torch.arange(n).repeat_interleave(q).expand(e, -1).clone()
    return sx, sy, qx, qy


def _tiny_mlp(seed=0):
    torch.manual_seed(seed)
    return MLP((2, 5, N), activation=nn.Tanh).double()


def _mlp_by_hand(params, x):
    w1, b1, w2, b2 = params
    return torch.tanh(x @ w1.T + b1) @ w2.T + b2


def _unrolled_meta_loss(theta, tasks, alpha, steps):
    """The MAML objective written out: mean over tasks of L_query(θ − α∇L_support …)."""
    sx, sy, qx, qy = tasks
    losses = []
    for e in range(sx.shape[0]):
        p = list(theta)
        for _ in range(steps):
            g = torch.autograd.grad(F.cross_entropy(_mlp_by_hand(p, sx[e]), sy[e]), p, create_graph=True)
            p = [pi - alpha * gi for pi, gi in zip(p, g)]
        losses.append(F.cross_entropy(_mlp_by_hand(p, qx[e]), qy[e]))
    return torch.stack(losses).mean()


def _flat_grad(loss, params):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(params))])


@pytest.mark.parametrize("vectorize", [False, True])
def test_second_order_meta_gradient_matches_unrolled_and_finite_differences(vectorize):
    net, tasks, alpha, steps = _tiny_mlp(), _tasks(), 0.7, 2
    maml = MAML(net, inner_lr=alpha, inner_steps=steps, vectorize=vectorize)
    loss, acc = maml.meta_loss(*tasks)
    got = _flat_grad(loss, net.parameters())

    theta = [p.detach().clone().requires_grad_() for p in net.parameters()]
    want_loss = _unrolled_meta_loss(theta, tasks, alpha, steps)
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(got, _flat_grad(want_loss, theta), rtol=1e-9, atol=1e-12)

    # Central differences of the post-adaptation query loss, coordinate by coordinate.
    flat = torch.cat([p.detach().flatten() for p in theta])
    sizes, shapes = [p.numel() for p in theta], [p.shape for p in theta]

    def objective(v):
        parts = [t.view(s).requires_grad_() for t, s in zip(v.split(sizes), shapes)]
        return _unrolled_meta_loss(parts, tasks, alpha, steps).item()

    eps = 1e-6
    fd = torch.stack([torch.tensor((objective(flat + eps * u) - objective(flat - eps * u)) / (2 * eps))
                      for u in torch.eye(flat.numel(), dtype=flat.dtype)])
    torch.testing.assert_close(got, fd.to(got.dtype), rtol=1e-5, atol=1e-7)
    assert 0 <= acc <= 1


@pytest.mark.parametrize("vectorize", [False, True])
def test_first_order_is_the_query_gradient_at_the_adapted_parameters(vectorize):
    net, tasks, alpha, steps = _tiny_mlp(), _tasks(), 0.7, 2
    sx, sy, qx, qy = tasks
    first = _flat_grad(MAML(net, alpha, steps, first_order=True, vectorize=vectorize).meta_loss(*tasks)[0],
                       net.parameters())
    second = _flat_grad(MAML(net, alpha, steps, vectorize=vectorize).meta_loss(*tasks)[0], net.parameters())
    want = 0
    for e in range(E):
        p = [t.detach().clone().requires_grad_() for t in net.parameters()]
        for _ in range(steps):
            g = torch.autograd.grad(F.cross_entropy(_mlp_by_hand(p, sx[e]), sy[e]), p)
            p = [(pi - alpha * gi).detach().requires_grad_() for pi, gi in zip(p, g)]
        want = want + _flat_grad(F.cross_entropy(_mlp_by_hand(p, qx[e]), qy[e]), p) / E
    torch.testing.assert_close(first, want, rtol=1e-9, atol=1e-12)
    assert (first - second).norm() > 0.05 * second.norm()  # the dropped terms are not negligible here


def test_learned_inner_lr_gets_its_gradient():
    net, tasks = _tiny_mlp(), _tasks()
    maml = MAML(net, inner_lr=0.5, inner_steps=2, learn_inner_lr=True)
    assert maml.inner_lrs.shape == (4,) and any(p is maml.inner_lrs for p in maml.parameters())
    got = torch.autograd.grad(maml.meta_loss(*tasks)[0], maml.inner_lrs)[0]
    eps = 1e-6
    for i in range(4):
        with torch.no_grad():
            maml.inner_lrs[i] += eps
            plus = maml.meta_loss(*tasks)[0].item()
            maml.inner_lrs[i] -= 2 * eps
            minus = maml.meta_loss(*tasks)[0].item()
            maml.inner_lrs[i] += eps
        assert got[i].item() == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_vmap_equals_loop_through_normalization_layers(norm):
    """torch.func's batching rules for the norm backwards give wrong second-order gradients
    (pytorch/functorch#534); MAML's vmap path must agree with its loop anyway."""
    torch.manual_seed(0)
    if norm == "batch":
        body = Conv4(1, 4, depth=2, track_running_stats=False)
    else:
        body = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.LayerNorm([4, 4, 4]), nn.Tanh(),
                             nn.Flatten())
    net = nn.Sequential(body, nn.Linear(4 * 4 * 4 if norm == "layer" else 4 * 2 * 2, N)).double()
    tasks = _tasks(shape=(1, 8, 8))
    results = []
    for vectorize in (False, True):
        loss, _ = MAML(net, inner_lr=0.4, inner_steps=2, vectorize=vectorize).meta_loss(*tasks)
        results.append((loss, _flat_grad(loss, net.parameters())))
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-9, atol=1e-12)


def test_default_batching_loops_for_convolutions_and_vmaps_otherwise():
    assert not MAML(Conv4(hidden=4, track_running_stats=False)).vectorize
    assert MAML(MLP()).vectorize
    # Batch norm that updates running statistics cannot run under vmap: it loops, and works.
    net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, N)).double()
    loss, _ = MAML(net, vectorize=True).meta_loss(*_tasks())
    loss.backward()
    assert net[1].num_batches_tracked > 0


@pytest.mark.parametrize("vectorize", [False, True])
def test_predict_batched_single_and_under_no_grad(vectorize):
    net, (sx, sy, qx, _) = _tiny_mlp(), _tasks()
    maml = MAML(net, inner_lr=0.5, vectorize=vectorize)
    with_grad = maml.predict(sx, sy, qx)
    assert with_grad.shape == (E, N * Q, N) and with_grad.requires_grad
    with torch.no_grad():
        logits = maml.predict(sx, sy, qx)
        three = maml(sx, sy, qx, steps=3)
        unadapted = maml.predict(sx, sy, qx, steps=0)
    assert not logits.requires_grad and all(p.grad is None for p in net.parameters())
    torch.testing.assert_close(logits, with_grad.detach())
    torch.testing.assert_close(unadapted, net(qx))
    assert not torch.allclose(three, logits)
    for e in range(E):
        torch.testing.assert_close(maml.predict(sx[e], sy[e], qx[e]), logits[e].requires_grad_())
    # The adapted model is better on its own support set after more steps.
    with torch.no_grad():
        support_loss = [F.cross_entropy(maml.predict(sx[0], sy[0], sx[0], steps=s), sy[0]) for s in (0, 1, 3)]
    assert support_loss[0] > support_loss[1] > support_loss[2]


def test_adapt_returns_fast_parameters_for_functional_calls():
    net, (sx, sy, qx, _) = _tiny_mlp(), _tasks()
    net.layers[0].bias.requires_grad_(False)  # frozen: kept, not adapted
    maml = MAML(net, inner_lr=0.5)
    assert maml.adapted_names == ("layers.0.weight", "layers.2.weight", "layers.2.bias")
    fast = maml.adapt(sx[0], sy[0], steps=2)
    assert list(fast) == [n for n, _ in net.named_parameters()]
    assert fast["layers.0.bias"] is net.layers[0].bias
    assert not torch.equal(fast["layers.0.weight"], net.layers[0].weight)
    torch.testing.assert_close(maml.functional_forward(fast, qx[0]), maml.predict(sx[0], sy[0], qx[0], steps=2))
    fast["layers.0.weight"].sum().backward()  # differentiable w.r.t. the module's parameters
    assert net.layers[0].weight.grad is not None
    with torch.no_grad():
        assert not maml.adapt(sx[0], sy[0])["layers.0.weight"].requires_grad


@pytest.mark.parametrize("vectorize", [False, True])
def test_regression_shapes_and_loss(vectorize):
    torch.manual_seed(0)
    net = MLP((1, 8, 1), activation=nn.Tanh)
    b = sample_sinusoid_tasks(4, 10, generator=torch.Generator().manual_seed(0))
    sx, sy, qx, qy = b.x[:, :5], b.y[:, :5], b.x[:, 5:], b.y[:, 5:]
    maml = MAML(net, inner_lr=0.01, loss="mse", vectorize=vectorize)
    assert maml.predict(sx, sy, qx).shape == (4, 5, 1) and maml.predict(sx[0], sy[0], qx[0]).shape == (5, 1)
    loss, acc = maml.meta_loss(sx, sy, qx, qy)
    assert acc is None and loss.shape == ()
    torch.testing.assert_close(loss, F.mse_loss(maml.predict(sx, sy, qx), qy))


def test_input_errors():
    net, (sx, sy, qx, qy) = _tiny_mlp(), _tasks()
    with pytest.raises(ValueError, match="loss must be one of"):
        MAML(net, loss="hinge")
    with pytest.raises(ValueError, match="inner_steps"):
        MAML(net, inner_steps=-1)
    with pytest.raises(ValueError, match="inner_lr"):
        MAML(net, inner_lr="0.4")
    with pytest.raises(ValueError, match="module must be an nn.Module"):
        MAML(lambda x: x)
    with pytest.raises(ValueError, match="no trainable parameters"):
        MAML(nn.ReLU())
    maml = MAML(net)
    with pytest.raises(ValueError, match="steps must be an int"):
        maml.predict(sx, sy, qx, steps=1.0)
    with pytest.raises(ValueError, match="support_y must hold integer"):
        maml.predict(sx, sy.double(), qx)
    with pytest.raises(ValueError, match="query_x must be of shape"):
        maml.predict(sx, sy, qx[..., :1])
    with pytest.raises(ValueError, match="support_x must be of shape"):
        maml.predict(sx[:, :2], sy, qx)
    with pytest.raises(ValueError, match="query_y must be of shape"):
        maml.meta_loss(sx, sy, qx, qy[0])
    with pytest.raises(ValueError, match="one task only"):
        maml.adapt(sx, sy)
    regression = MAML(MLP((2, 3, 1)).double(), loss="mse")
    with pytest.raises(ValueError, match="support_y must be floating point"):
        regression.predict(sx, sy[..., None], qx)
    with pytest.raises(ValueError, match=re.escape("support_y must be of shape (S, T) or (E, S, T)")):
        regression.predict(sx[0], sy[0].double(), qx[0])


# ------------------------------------------------------------------------------------------- memory


def _rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))  # type(): no __class__ hooks


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc/self/status (Linux)")
def test_memory_stays_flat_over_second_order_meta_iterations():
    """50 second-order meta-iterations (conv-4 with 16 channels, 28×28, 4 tasks of 5-way 1-shot
    with 5 queries, Adam). The resident set (VmRSS, read after every iteration) may not rise more
    than 8 MiB above its peak over the first 10 (it wanders by ~±4 MiB; one meta-iteration's graph
    holds ~19 MiB, so a leak of graphs or module copies would add that per iteration), and the
    number of live tensors must be the same after iteration 50 as after iteration 10."""
    torch.manual_seed(0)
    net = nn.Sequential(Conv4(1, 16, track_running_stats=False), nn.Linear(16, 5))
    maml = MAML(net, inner_lr=0.4)
    opt = torch.optim.Adam(maml.parameters(), 1e-3)
    sx, sy, qx, qy = _tasks(shape=(1, 28, 28), dtype=torch.float32, e=4, n=5, k=1, q=5)
    rss, tensors = [], None
    for it in range(50):
        loss, _ = maml.meta_loss(sx, sy, qx, qy)
        opt.zero_grad()
        loss.backward()
        opt.step()
        del loss
        rss.append(_rss_mib())
        if it == 9:
            tensors = _live_tensors()
    warm, late = max(rss[:10]), max(rss[10:])
    print(f"resident set: peak {warm:.1f} MiB over iterations 1-10, {late:.1f} MiB over 11-50")
    assert _live_tensors() == tensors
    assert late - warm < 8.0, f"resident set grew from a peak of {warm:.1f} to {late:.1f} MiB"


# ----------------------------------------------------------------------------------------- learning


def test_learns_sinusoid_regression():
    """MAML's sinusoid set-up (MLP 1-40-40-1, α = 0.01, one step, K = 10, meta-batch 25, Adam
    1e-3), 1000 meta-iterations: post-adaptation MSE ~1.5 (pre-adaptation ~3.6, predicting 0
    ~4.9), and more steps at test help (~0.8 after 10)."""
    torch.manual_seed(0)
    net = MLP((1, 40, 40, 1))
    maml = MAML(net, inner_lr=0.01, inner_steps=1, loss="mse")
    opt = torch.optim.Adam(maml.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(1000):
        b = sample_sinusoid_tasks(25, 20, generator=g)
        loss, _ = maml.meta_loss(b.x[:, :10], b.y[:, :10], b.x[:, 10:], b.y[:, 10:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    b = sample_sinusoid_tasks(200, 20, generator=torch.Generator().manual_seed(99))
    sx, sy, qx, qy = b.x[:, :10], b.y[:, :10], b.x[:, 10:], b.y[:, 10:]
    with torch.no_grad():
        zero, pre = qy.pow(2).mean().item(), F.mse_loss(net(qx), qy).item()
        post = F.mse_loss(maml.predict(sx, sy, qx), qy).item()
        post10 = F.mse_loss(maml.predict(sx, sy, qx, steps=10), qy).item()
    print(f"sinusoid MSE: predict 0 {zero:.2f}, before adaptation {pre:.2f}, 1 step {post:.2f}, 10 steps {post10:.2f}")
    assert post < 0.5 * zero and post < 0.6 * pre and post10 < post


def test_learns_digits_5_way_1_shot_on_held_out_examples():
    """Second-order MAML, conv-4 (3 blocks of 16 channels, batch statistics), α = 0.4, one step,
    meta-batch 4, 200 meta-iterations on half of every digit class's examples; 5-way 1-shot on
    the other half with 3 steps: ~0.94 (untrained ~0.32, chance 0.2)."""
    digits = load_digits()
    perm = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))
    train, test = (ImageDataset(digits.images[i], digits.labels[i], digits.class_names)
                   for i in (perm[: len(perm) // 2], perm[len(perm) // 2:]))
    torch.manual_seed(0)
    net = nn.Sequential(Conv4(1, 16, depth=3, track_running_stats=False), nn.Linear(16, 5))
    maml = MAML(net, inner_lr=0.4, inner_steps=1)
    evaluation = EpisodeSampler(test, 5, 1, 5, seed=123).sample(100)

    def accuracy():
        with torch.no_grad():
            b = evaluation
            return maml.meta_loss(b.support_images, b.support_labels, b.query_images, b.query_labels,
                                  steps=3)[1].item()

    before = accuracy()
    opt = torch.optim.Adam(maml.parameters(), 3e-3)
    sampler = EpisodeSampler(train, 5, 1, 5, seed=0)
    for _ in range(200):
        b = sampler.sample(4)
        loss, _ = maml.meta_loss(b.support_images, b.support_labels, b.query_images, b.query_labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = accuracy()
    print(f"digits 5-way 1-shot accuracy: untrained {before:.3f}, trained {after:.3f}")
    assert after > 0.8 and after > before + 0.3, (before, after)


def _normed_mlp(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 5), nn.LayerNorm(5), nn.Tanh(), nn.Linear(5, N)).double()
    with torch.no_grad():  # away from the default 1 / 0, so that the norm's parameters matter
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    return net


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("vectorize", [False, True])
def test_outer_only_parameters_stay_put_in_the_inner_loop_and_get_the_meta_gradient(first_order, vectorize):
    from metalearn_ext.nn.maml import norm_parameter_names

    net, tasks = _normed_mlp(), _tasks()
    norms = norm_parameter_names(net)
    assert norms == {"1.weight", "1.bias"}
    maml = MAML(net, inner_lr=0.5, inner_steps=2, first_order=first_order, vectorize=vectorize,
                adapt=[n for n, _ in net.named_parameters() if n not in norms])
    assert maml.adapted_names == ("0.weight", "0.bias", "3.weight", "3.bias")
    adapted = maml.adapt(tasks[0][0], tasks[1][0])
    params = dict(net.named_parameters())
    assert all(adapted[n] is params[n] for n in norms)
    assert not torch.equal(adapted["0.weight"], params["0.weight"])
    got = torch.autograd.grad(maml.meta_loss(*tasks)[0], [net[1].weight, net[1].bias])
    if first_order:  # by hand: inner steps on detached gradients, then the query loss's direct dependence
        from torch.func import functional_call

        sx, sy, qx, qy = tasks
        want = [torch.zeros_like(net[1].weight), torch.zeros_like(net[1].bias)]
        for e in range(E):
            fast = {n: p for n, p in params.items() if n not in norms}
            for _ in range(2):
                loss = F.cross_entropy(functional_call(net, {**params, **fast}, (sx[e],)), sy[e])
                grads = torch.autograd.grad(loss, list(fast.values()))
                fast = {n: (p - 0.5 * g).detach().requires_grad_() for (n, p), g in zip(fast.items(), grads)}
            loss = F.cross_entropy(functional_call(net, {**params, **fast}, (qx[e],)), qy[e])
            for w, g in zip(want, torch.autograd.grad(loss, [net[1].weight, net[1].bias])):
                w += g / E
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)
        return
    eps = 1e-6  # second order: the whole dependence, against finite differences
    for p, g in zip((net[1].weight, net[1].bias), got):
        for i in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[i] += eps
                plus = maml.meta_loss(*tasks)[0].item()
                p.view(-1)[i] -= 2 * eps
                minus = maml.meta_loss(*tasks)[0].item()
                p.view(-1)[i] += eps
            assert g.view(-1)[i].item() == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-8)


def test_adapt_names_checked():
    net = _normed_mlp()
    with pytest.raises(ValueError, match=r"adapt names \['nope'\]"):
        MAML(net, adapt=["nope", "0.weight"])
    with pytest.raises(ValueError, match="no trainable parameters to adapt"):
        MAML(net, adapt=[])
    with pytest.raises(ValueError, match="adapt must be parameter names"):
        MAML(net, adapt="0.weight")


def test_conv4_average_is_the_mean_of_the_last_map():
    torch.manual_seed(0)
    flat = Conv4(1, 8, pool=False, track_running_stats=False).double()
    avg = Conv4(1, 8, pool=False, track_running_stats=False, average=True).double()
    avg.load_state_dict(flat.state_dict())
    x = torch.randn(5, 1, 28, 28, dtype=torch.float64)
    assert flat.output_dim(28) == 8 * 2 * 2 and avg.output_dim(28) == 8
    want = flat(x).reshape(5, 8, 2, 2).mean((2, 3))
    torch.testing.assert_close(avg(x), want)
    assert avg(x).shape == (5, avg.output_dim(28))
