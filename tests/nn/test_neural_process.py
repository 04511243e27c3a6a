"""CNP, latent NP and ANP: shapes for any d_x, d_y; a padded context (and padded targets) give what
the unpadded sets give; packed and padded computation agree in float64; the empty context; the
mixture over z; every parameter learns; bad input names the argument."""
import pytest
import torch

from metalearn_ext.nn import ANP, CNP, LatentNP
from metalearn_ext.nn.neural_process import mixture_moments

SMALL = dict(hidden=(16, 16), decoder_hidden=(16,))
MODELS = {
    "cnp": lambda dx, dy: CNP(dx, dy, **SMALL),
    "np": lambda dx, dy: LatentNP(dx, dy, z_dim=4, **SMALL),
    "np-latent-only": lambda dx, dy: LatentNP(dx, dy, z_dim=4, deterministic=False, **SMALL),
    "anp": lambda dx, dy: ANP(dx, dy, z_dim=4, heads=4, **SMALL),
    "anp-self": lambda dx, dy: ANP(dx, dy, z_dim=4, heads=4, self_attention=True, **SMALL),
    "attentive-cnp": lambda dx, dy: ANP(dx, dy, z_dim=None, heads=2, **SMALL),
}


def sets(b=3, nc=5, nt=7, dx=2, dy=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
    return r(b, nc, dx), r(b, nc, dy), r(b, nt, dx), r(b, nt, dy)


def build(name, dx=2, dy=3):
    torch.manual_seed(0)
    return MODELS[name](dx, dy).double()


def seeded(fn, *args, **kw):
    """The latent models draw z from torch's global RNG: the same seed, the same draws."""
    torch.manual_seed(1)
    return fn(*args, **kw)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dx, dy", [(1, 1), (2, 3)])
def test_shapes(name, dx, dy):
    model = build(name, dx, dy)
    xc, yc, xt, yt = sets(dx=dx, dy=dy)
    d = model(xc, yc, xt)
    assert isinstance(d, torch.distributions.Normal) and d.mean.shape == d.stddev.shape == (3, 7, dy)
    assert bool((d.stddev >= 0.1).all())  # the σ floor
    assert model.log_likelihood(xc, yc, xt, yt, num_z=5).shape == (3, 7)
    loss, info = model.loss(xc, yc, xt, yt)
    assert loss.dim() == 0 and torch.isfinite(loss) and set(info) == {"nll", "kl"}
    if model.is_latent:
        mix = model(xc, yc, xt, num_z=5)
        assert mix.mean.shape == (5, 3, 7, dy)
        mean, std = mixture_moments(mix)
        assert mean.shape == std.shape == (3, 7, dy)
        assert bool((std >= mix.stddev.min(0).values - 1e-12).all())  # a mixture is at least as wide
    else:
        assert info["kl"] == 0.0


@pytest.mark.parametrize("name", MODELS)
def test_padded_context_and_targets_equal_the_unpadded_sets(name):
    model = build(name)
    xc, yc, xt, yt = sets(b=1, nc=4, nt=6)
    want = seeded(model, xc, yc, xt)
    want_loss = seeded(model.loss, xc, yc, xt, yt)[0]
    # pad the context with 3 garbage points (NaN included) and the targets with 2
    pad = lambda t, n, v: torch.cat([t, torch.full((1, n, t.shape[-1]), v, dtype=t.dtype)], 1)
    mask = torch.tensor([[True] * 4 + [False] * 3])
    tmask = torch.tensor([[True] * 6 + [False] * 2])
    got = seeded(model, pad(xc, 3, 5.0), pad(yc, 3, float("nan")), xt, mask)
    torch.testing.assert_close(got.mean, want.mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got.stddev, want.stddev, rtol=1e-10, atol=1e-10)
    got_loss = seeded(model.loss, pad(xc, 3, 5.0), pad(yc, 3, float("nan")), pad(xt, 2, 0.0),
                      pad(yt, 2, float("nan")), mask, tmask)[0]
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", MODELS)
def test_packed_and_padded_paths_agree_in_loss_and_gradients(name):
    model = build(name)
    xc, yc, xt, yt = sets(b=4, nc=6, nt=9)
    mask = torch.rand(4, 6, generator=torch.Generator().manual_seed(3)) < 0.6
    mask[:, 0] = True
    tmask = torch.rand(4, 9, generator=torch.Generator().manual_seed(4)) < 0.6
    tmask[:, 0] = True
    out = []
    for packed in (True, False):
        model.set_packed(packed)
        loss = seeded(model.loss, xc, yc, xt, yt, mask, tmask)[0]
        grads = torch.autograd.grad(loss, list(model.parameters()))
        assert all(g.abs().sum() > 0 for g in grads)  # every parameter takes part
        out.append((loss, torch.cat([g.flatten() for g in grads])))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_an_empty_context_predicts_the_zero_representation(name):
    model = build(name)
    xc, yc, xt, _ = sets(b=2)
    mask = torch.tensor([[True] * 5, [False] * 5])
    d = seeded(model, xc, yc, xt, mask)
    assert bool(torch.isfinite(d.mean).all() and torch.isfinite(d.stddev).all())
    if name == "cnp":  # r = 0 for the empty row, so its prediction is the decoder's for r = 0
        want = model.decoder(torch.zeros(7, 16, dtype=torch.float64), xt[1])
        torch.testing.assert_close(d.mean[1], want.mean)
    # the empty row is the same whatever the (masked) context holds
    other = seeded(model, xc, yc + 100.0 * torch.tensor([0.0, 1.0], dtype=torch.float64)[:, None, None], xt, mask)
    torch.testing.assert_close(other.mean[1], d.mean[1])


def test_the_mixture_of_one_draw_is_that_draw():
    model = build("np")
    xc, yc, xt, yt = sets()
    one = seeded(model, xc, yc, xt, num_z=1)
    torch.testing.assert_close(seeded(model.log_likelihood, xc, yc, xt, yt, num_z=1),
                               one.log_prob(yt).sum(-1)[0])
    cnp = build("cnp")
    torch.testing.assert_close(cnp.log_likelihood(xc, yc, xt, yt), cnp(xc, yc, xt).log_prob(yt).sum(-1))


def test_padding_does_not_change_a_trained_step():
    """Two Adam steps on a padded batch equal those on the unpadded one (float64)."""
    xc, yc, xt, yt = sets(b=1, nc=4, nt=6)
    pad = lambda t, n: torch.cat([t, torch.zeros(1, n, t.shape[-1], dtype=t.dtype)], 1)
    finals = []
    for padded in (False, True):
        model = build("cnp")
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        for _ in range(2):
            if padded:
                loss = model.loss(pad(xc, 2), pad(yc, 2), pad(xt, 3), pad(yt, 3),
                                  torch.tensor([[True] * 4 + [False] * 2]), torch.tensor([[True] * 6 + [False] * 3]))[0]
            else:
                loss = model.loss(xc, yc, xt, yt)[0]
            opt.zero_grad()
            loss.backward()
            opt.step()
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(finals[0], finals[1], rtol=1e-9, atol=1e-12)


def bad_inputs():
    xc, yc, xt, yt = sets(dtype=torch.float32)
    mask = torch.ones(3, 5, dtype=torch.bool)
    nan = xc.clone()
    nan[1, 2, 0] = float("nan")
    return [
        (dict(x_context=xc[:2]), ValueError, r"y_context must be of shape \(2, 5, 3\)"),
        (dict(y_context=yc[:, :4]), ValueError, r"y_context must be of shape \(3, 5, 3\)"),
        (dict(x_target=xt[:2]), ValueError, r"x_target must be of shape \(3, Nt, 2\)"),
        (dict(x_context=xc[..., :1]), ValueError, r"x_context must be of shape \(B, N, 2\)"),
        (dict(y_context=yc[0]), ValueError, r"y_context must be of shape \(B, N, 3\)"),
        (dict(context_mask=mask[:, :4]), ValueError, r"context_mask must be of shape \(3, 5\)"),
        (dict(context_mask=mask.float()), TypeError, "context_mask must be a bool Tensor"),
        (dict(x_context=nan), ValueError, "x_context holds NaN"),
        (dict(y_target=yt[:, :6]), ValueError, r"y_target must be of shape \(3, 7, 3\)"),
        (dict(y_target=torch.full_like(yt, float("inf"))), ValueError, "y_target holds NaN or infinite"),
        (dict(target_mask=torch.zeros(3, 7, dtype=torch.bool)), ValueError, "target_mask has a row without"),
        (dict(x_context=xc.long()), TypeError, "x_context must be floating point"),
    ], (xc, yc, xt, yt, mask)


@pytest.mark.parametrize("name", ["cnp", "np", "anp"])
def test_bad_input_names_the_argument(name):
    model = MODELS[name](2, 3)
    cases, (xc, yc, xt, yt, mask) = bad_inputs()
    for change, error, match in cases:
        a = dict(x_context=xc, y_context=yc, x_target=xt, y_target=yt, context_mask=mask, target_mask=None)
        a.update(change)
        with pytest.raises(error, match=match):
            model.loss(**a)
        if "y_target" not in change and "target_mask" not in change:
            with pytest.raises(error, match=match):
                model(a["x_context"], a["y_context"], a["x_target"], a["context_mask"])
    if model.is_latent:
        with pytest.raises(ValueError, match="num_z must be a positive int"):
            model(xc, yc, xt, num_z=0)
    else:
        with pytest.raises(ValueError, match="num_z applies to latent models only"):
            model(xc, yc, xt, num_z=2)


def test_bad_construction():
    with pytest.raises(ValueError, match="x_dim must be a positive int"):
        CNP(0, 1)
    with pytest.raises(ValueError, match="needs a deterministic path or a latent"):
        LatentNP(1, 1, z_dim=None, deterministic=False)
    with pytest.raises(ValueError, match=r"dim \(16\) must be a multiple of heads \(3\)"):
        ANP(1, 1, heads=3, **SMALL)
