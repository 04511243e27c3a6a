"""Conv4, MLP and ProtoNet: shapes, the distance math against a float64 reference, batching,
input checks, and learning on 8×8 digits and on the real small Omniglot archives."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from metalearn_ext.data import EpisodeSampler, ImageDataset, load_digits, load_omniglot
from metalearn_ext.nn import MLP, Conv4, ProtoNet

OMNIGLOT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "omniglot"


def _episodes(e=3, n=4, k=2, q=3, shape=(6,), seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(e, n * k, *shape, generator=g, dtype=torch.float64)
    qx = torch.randn(e, n * q, *shape, generator=g, dtype=torch.float64)
    sy = torch.arange(n).repeat_interleave(k).expand(e, -1).clone()
    qy = torch.arange(n).repeat_interleave(q).expand(e, -1).clone()
    return sx, sy, qx, qy


# ---------------------------------------------------------------------------------------- Conv4, MLP


@pytest.mark.parametrize("kwargs, size, dim", [
    ({}, 28, 64),
    ({"hidden": 8, "depth": 3}, 8, 8),
    ({"hidden": 8, "pool": False}, 28, 8 * 2 * 2),  # 28 -> 14 -> 7 -> 4 -> 2
    ({"hidden": 4, "batch_norm": False, "in_channels": 3}, 32, 4 * 2 * 2),
])
def test_conv4_shapes(kwargs, size, dim):
    net = Conv4(**kwargs)
    x = torch.rand(5, kwargs.get("in_channels", 1), size, size)
    assert net(x).shape == (5, dim)
    assert net.output_dim(size) == dim


def test_conv4_batch_statistics_option():
    tracked, batch_stats = Conv4(hidden=4), Conv4(hidden=4, track_running_stats=False)
    assert len(list(tracked.buffers())) == 3 * 4  # running mean, var, count per block
    assert list(batch_stats.buffers()) == []
    tracked.eval(), batch_stats.eval()
    x = torch.rand(6, 1, 16, 16)
    # Running statistics in evaluation: an example's output does not depend on its batch ...
    torch.testing.assert_close(tracked(x)[:3], tracked(x[:3]))
    # ... batch statistics always: it does.
    assert not torch.allclose(batch_stats(x)[:3], batch_stats(x[:3]))

def test_conv4_errors():
    with pytest.raises(ValueError, match="hidden"):
        Conv4(hidden=0)
    with pytest.raises(ValueError, match="depth"):
        Conv4(depth=1.5)
    net = Conv4(hidden=4)
    with pytest.raises(ValueError, match=r"x must be of shape \(B, 1, H, W\)"):
        net(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="too small"):
        net(torch.rand(2, 1, 8, 8))


def test_mlp():
    net = MLP((3, 7, 2), activation=nn.Tanh)
    assert net(torch.rand(4, 5, 3)).shape == (4, 5, 2)
    assert [type(m) for m in net.layers] == [nn.Linear, nn.Tanh, nn.Linear]
    assert MLP()(torch.rand(10, 1)).shape == (10, 1)
    with pytest.raises(ValueError, match="sizes"):
        MLP((3,))
    with pytest.raises(ValueError, match="activation"):
        MLP((3, 2), activation="relu")
    with pytest.raises(ValueError, match=r"x must be of shape \(\.\.\., 3\)"):
        net(torch.rand(4, 2))


# ------------------------------------------------------------------------------------------ ProtoNet


def _reference_logits(z_support, support_y, z_query, n):
    """−‖q − mean of class c‖², computed directly in float64 for one episode."""
    protos = torch.stack([z_support[support_y == c].mean(0) for c in range(n)])
    return -((z_query[:, None, :] - protos[None]) ** 2).sum(-1)


def test_logits_are_negative_squared_distances_to_prototypes():
    sx, sy, qx, _ = _episodes()
    model = ProtoNet(nn.Identity())
    logits = model.predict(sx, sy, qx)
    assert logits.shape == (3, 12, 4)
    for e in range(3):
        torch.testing.assert_close(logits[e], _reference_logits(sx[e], sy[e], qx[e], 4))
        torch.testing.assert_close(model(sx[e], sy[e], qx[e]), logits[e])  # one episode, forward
    assert (logits <= 0).all()


def test_distances_stay_accurate_far_from_the_origin():
    """Embeddings with a large common offset (ReLU features are all ≥ 0): the expansion
    ‖q‖² + ‖p‖² − 2 q·p in float32 must still match the float64 distances, and a query equal
    to its prototype gets logit exactly 0, never a positive one."""
    sx, sy, qx, _ = _episodes(e=1, shape=(32,))
    sx, qx = sx + 1e3, qx + 1e3
    qx[0, 0] = sx[0, sy[0] == 0].mean(0)
    model = ProtoNet(nn.Identity())
    got = model.predict(sx.float(), sy, qx.float())
    want = _reference_logits(sx[0], sy[0], qx[0], 4)
    torch.testing.assert_close(got[0].double(), want, atol=2e-2, rtol=1e-4)
    assert got.max() <= 0 and got[0, 0, 0] > -1e-2


def test_batched_episodes_use_one_encoder_call_and_match_single_episodes():
    torch.manual_seed(0)
    model = ProtoNet(Conv4(1, 8, depth=3, batch_norm=False))
    calls = []
    model.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    g = torch.Generator().manual_seed(0)
    sx, qx = torch.rand(4, 10, 1, 8, 8, generator=g), torch.rand(4, 6, 1, 8, 8, generator=g)
    sy = torch.arange(5).repeat_interleave(2).expand(4, -1).clone()
    batched = model.predict(sx, sy, qx)
    assert calls == [4 * 16]
    for e in range(4):
        torch.testing.assert_close(model.predict(sx[e], sy[e], qx[e]), batched[e], rtol=1e-5, atol=1e-5)


def test_n_way_explicit_and_empty_class():
    sx, sy, qx, _ = _episodes(e=1)
    model = ProtoNet(nn.Identity())
    logits = model.predict(sx[0], sy[0], qx[0], n_way=6)  # classes 4, 5 have no support example
    assert logits.shape == (12, 6)
    torch.testing.assert_close(logits[:, 4], -(qx[0] ** 2).sum(-1))  # their prototype is 0
    torch.testing.assert_close(logits[:, :4], model.predict(sx[0], sy[0], qx[0]))


def test_loss_accuracy_and_gradients():
    torch.manual_seed(0)
    sx, sy, qx, qy = _episodes()
    encoder = nn.Linear(6, 5).double()
    model = ProtoNet(encoder)
    loss, acc = model.loss(sx, sy, qx, qy)
    logits = model.predict(sx, sy, qx)
    torch.testing.assert_close(loss, nn.functional.cross_entropy(logits.reshape(-1, 4), qy.reshape(-1)))
    assert acc == (logits.argmax(-1) == qy).double().mean() and not acc.requires_grad
    loss.backward()
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0


def test_input_errors():
    sx, sy, qx, qy = _episodes()
    model = ProtoNet(nn.Identity())
    with pytest.raises(ValueError, match="support_y must hold integer"):
        model.predict(sx, sy.double(), qx)
    with pytest.raises(ValueError, match="support_x must be of shape"):
        model.predict(sx[:, :5], sy, qx)
    with pytest.raises(ValueError, match="query_x must be of shape"):
        model.predict(sx, sy, qx[..., :4])
    with pytest.raises(ValueError, match="query_x must be of shape"):
        model.predict(sx, sy, qx[:2])
    with pytest.raises(ValueError, match="support_y must be of shape"):
        model.predict(sx, sy[..., None], qx)
    with pytest.raises(ValueError, match="support_y must hold labels in 0..N−1"):
        model.predict(sx, sy - 1, qx)
    with pytest.raises(ValueError, match="n_way"):
        model.predict(sx, sy, qx, n_way=0)
    with pytest.raises(ValueError, match="query_y must be of shape"):
        model.loss(sx, sy, qx, qy[:, :3])
    with pytest.raises(ValueError, match="query_y is empty"):
        model.loss(sx, sy, qx[:, :0], qy[:, :0])
    with pytest.raises(ValueError, match="encoder"):
        ProtoNet(encoder="conv4")


# ---------------------------------------------------------------------------------------- learning


def _accuracy(model, dataset, n_way, k_shot, episodes=150, seed=123):
    model.eval()
    b = EpisodeSampler(dataset, n_way, k_shot, 5, seed=seed).sample(episodes)
    with torch.no_grad():
        _, acc = model.loss(b.support_images, b.support_labels, b.query_images, b.query_labels)
    model.train()
    return acc.item()


def _train(model, sampler, steps, episodes=1):
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(steps):
        b = sampler.sample(episodes)
        loss, _ = model.loss(b.support_images, b.support_labels, b.query_images, b.query_labels)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_learns_digits_on_held_out_examples():
    """5-way 1-shot on digits the training never saw (half of every class's examples), after
    100 steps of 10-way 5-shot training: ~0.95 (untrained encoder ~0.55, chance 0.2)."""
    torch.manual_seed(0)
    digits = load_digits()
    perm = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))
    train, test = (ImageDataset(digits.images[i], digits.labels[i], digits.class_names)
                   for i in (perm[: len(perm) // 2], perm[len(perm) // 2:]))
    model = ProtoNet(Conv4(1, 32, depth=3))
    before = _accuracy(model, test, 5, 1)
    _train(model, EpisodeSampler(train, 10, 5, 5, seed=0), steps=100, episodes=2)
    after = _accuracy(model, test, 5, 1)
    print(f"digits 5-way 1-shot accuracy: untrained {before:.3f}, trained {after:.3f}")
    assert after > 0.85 and after > before + 0.2, (before, after)


@pytest.fixture(scope="module")
def omniglot_splits(tmp_path_factory):
    if not (OMNIGLOT_DIR / "images_background_small1.zip").is_file():
        pytest.skip(f"Omniglot small archives not found at {OMNIGLOT_DIR}")
    cache = tmp_path_factory.mktemp("omniglot-cache")
    return tuple(load_omniglot(split, root=OMNIGLOT_DIR, cache_dir=cache, image_size=14)
                 for split in ("train", "test"))


def test_learns_omniglot_held_out_characters(omniglot_splits):
    """5-way 1-shot on the 63 held-out characters of the small archives (14×14, 3 blocks of 32
    channels) after 120 steps of 20-way 1-shot training: ~0.82 (untrained ~0.45, chance 0.2)."""
    train, test = omniglot_splits
    torch.manual_seed(0)
    model = ProtoNet(Conv4(1, 32, depth=3))
    before = _accuracy(model, test, 5, 1, episodes=100)
    _train(model, EpisodeSampler(train, 20, 1, 5, seed=0), steps=120)
    after = _accuracy(model, test, 5, 1, episodes=100)
    print(f"omniglot 5-way 1-shot accuracy: untrained {before:.3f}, trained {after:.3f}")
    assert after > 0.7 and after > before + 0.2, (before, after)


# --------------------------------------------------------------------------------------- benchmark


def test_fewshot_benchmark_checks_before_it_times(monkeypatch):
    """benchmarks/bench_fewshot.py at toy sizes: every row is timed after its float64 check, and a
    variant that computes something else (here: channels_last with a perturbed weight) reports
    ok=False and no speed."""
    from benchmarks import bench_fewshot as bench

    for name, value in dict(HIDDEN=4, SIZE=16, PROTO_WAYS=3, PROTO_SHOTS=2, PROTO_QUERIES=1, MAML_WAYS=3,
                            MAML_TASKS=2, WARMUP=0, STEPS=2).items():
        monkeypatch.setattr(bench, name, value)
    monkeypatch.setattr(torch, "compile", lambda module: module)  # compiling is not what is tested

    def wrong_channels_last(module):
        with torch.no_grad():
            next(module.parameters()).mul_(1.001)
        return module

    monkeypatch.setattr(bench, "_to_channels_last", wrong_channels_last)
    rows = bench.BENCHES["protonet_train"]("cpu") + bench.BENCHES["maml_train"]("cpu")
    assert {r["op"] for r in rows} == {"protonet_train", "maml_train"}
    for r in rows:
        if "channels_last" in r["variant"]:
            assert not r["ok"] and "float64" in r["error"] and "median_step_s" not in r, r
        else:
            assert r["ok"] and r["median_step_s"] > 0 and r["speedup_vs_eager"] > 0, r
    assert {(r.get("order"), r["variant"]) for r in rows} >= {
        (None, "eager"), (None, "compile"), ("second", "eager"), ("second", "vmap"), ("first", "compile")}
    table = bench.FORMATTERS["maml_train"](rows)
    assert "WRONG" in table and "nan" not in table.lower()
