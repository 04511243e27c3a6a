"""95% Student-t intervals and their paired form, against scipy's own interval."""
import math

import pytest
import torch
from scipy import stats

from metalearn_ext.evaluate import interval, paired_interval


def test_interval_matches_scipy():
    v = torch.randn(37, generator=torch.Generator().manual_seed(0)) * 3 + 1
    lo, hi = stats.t.interval(0.95, 36, loc=float(v.double().mean()), scale=stats.sem(v.double().numpy()))
    r = interval(v)
    assert r["n"] == 37 and r["mean"] == pytest.approx(float(v.double().mean()), abs=1e-12)
    assert (r["lo"], r["hi"]) == (pytest.approx(lo, rel=1e-10), pytest.approx(hi, rel=1e-10))
    assert r["half"] == pytest.approx((hi - lo) / 2, rel=1e-10)
    assert interval(v.tolist()) == r  # sequences too
    assert interval(v.view(37, 1)) == r  # any shape, flattened


def test_interval_of_booleans_and_degenerate_cases():
    r = interval(torch.tensor([True, False, True, True]))
    assert r["mean"] == 0.75 and r["half"] > 0
    assert interval(torch.ones(5))["half"] == 0.0
    one = interval(torch.tensor([2.0]))
    assert one["mean"] == 2.0 and math.isnan(one["half"]) and math.isnan(one["lo"]) and one["n"] == 1
    with pytest.raises(ValueError, match="no values"):
        interval(torch.tensor([]))


def test_paired_interval_is_the_interval_of_differences_and_tighter_when_correlated():
    g = torch.Generator().manual_seed(1)
    shared = torch.randn(200, generator=g) * 5  # per-episode difficulty, common to both models
    a = shared + 0.3 + 0.1 * torch.randn(200, generator=g)
    b = shared + 0.1 * torch.randn(200, generator=g)
    p = paired_interval(a, b)
    assert p == interval(a.double() - b.double())
    assert p["lo"] > 0  # the paired test sees a's advantage ...
    assert interval(a)["lo"] < interval(b)["hi"]  # ... that two separate intervals cannot
    with pytest.raises(ValueError, match="shape"):
        paired_interval(a, b[:10])
