"""The site's randomness: Gaussian of the right scale, replayable only from the site's own key."""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from client.privacy.randomness import SiteRandomness


def test_noise_is_gaussian_with_the_requested_scale() -> None:
    noise = SiteRandomness.replayable(0, "site", "instruct", 1).gaussian((400, 1000), 0.7)
    assert noise.shape == (400, 1000) and noise.dtype == torch.float32
    values = noise.double().numpy().ravel() / 0.7
    assert abs(values.std() - 1.0) < 0.005 and abs(values.mean()) < 0.005
    assert stats.kstest(values, "norm").pvalue > 0.01
    assert abs(stats.kurtosis(values)) < 0.05  # the halved sum of four draws is still normal


def test_replayable_streams_repeat_only_for_the_same_key() -> None:
    def draw(*identity: object) -> torch.Tensor:
        return SiteRandomness.replayable(7, *identity).gaussian((1000,), 1.0)

    assert torch.equal(draw("site", "align", 1), draw("site", "align", 1))
    assert not torch.equal(draw("site", "align", 1), draw("site", "align", 2))
    assert not torch.equal(draw("site", "align", 1), draw("other", "align", 1))


def test_secure_streams_never_repeat() -> None:
    first, second = SiteRandomness.secure(), SiteRandomness.secure()
    assert not first.replayable
    assert not torch.equal(first.gaussian((1000,), 1.0), second.gaussian((1000,), 1.0))


def test_uniforms_and_permutations() -> None:
    randomness = SiteRandomness.replayable(3, "site")
    uniform = randomness.uniform(100_000).numpy()
    assert uniform.min() >= 0.0 and uniform.max() < 1.0
    assert stats.kstest(uniform, "uniform").pvalue > 0.01
    permutation = randomness.permutation(50)
    assert sorted(permutation.tolist()) == list(range(50))
    assert not np.array_equal(permutation.numpy(), np.arange(50))
