"""Thresholds at a stated false-positive rate, latent ranking, the regression fold (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitor.errors import ProbeDataError
from monitor.lab.calibrate import threshold_at_fpr
from monitor.lab.discover import rank_latents
from monitor.lab.train import fit_logistic


@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.2])
def test_threshold_flags_exactly_the_stated_fraction_of_distinct_scores(fpr):
    scores = np.random.default_rng(0).normal(size=1000)
    threshold = threshold_at_fpr(scores, fpr)
    assert (scores >= threshold).sum() == math.floor(fpr * 1000)


def test_ties_never_push_the_rate_over_the_target():
    scores = np.array([5.0] * 3 + [1.0] * 97)  # 3 tied at the top, 1% allowed
    threshold = threshold_at_fpr(scores, 0.01)
    assert (scores >= threshold).sum() == 0
    scores = np.array([9.0, 5.0, 5.0] + [1.0] * 97)  # 2% allowed: the tie backs off to 1
    assert (scores >= threshold_at_fpr(scores, 0.02)).sum() == 1


def test_scores_that_never_became_eligible_count_as_negatives():
    scores = np.array([-np.inf] * 50 + list(np.linspace(0, 1, 50)))
    threshold = threshold_at_fpr(scores, 0.02)
    assert (scores >= threshold).sum() == 2


def test_bad_rates_and_empty_controls_are_refused():
    with pytest.raises(ProbeDataError, match=r"in \(0, 1\)"):
        threshold_at_fpr(np.ones(10), 1.5)
    with pytest.raises(ProbeDataError, match="needs control examples"):
        threshold_at_fpr(np.array([]), 0.01)


def test_a_planted_latent_ranks_first_and_silent_ones_sit_at_half():
    rng = np.random.default_rng(1)
    labels = np.array([0, 1] * 100)
    values = np.abs(rng.normal(size=(200, 6))) * (rng.random((200, 6)) < 0.3)
    values[:, 4] = labels * (2.0 + rng.random(200))  # fires only on label 1
    values[:, 2] = 0.0  # never fires
    ranking = rank_latents(values, labels)
    assert ranking[0].latent == 4 and ranking[0].auroc == 1.0 and ranking[0].active_negative == 0.0
    silent = next(r for r in ranking if r.latent == 2)
    assert silent.auroc == 0.5 and silent.effect_size == 0.0


def test_the_folded_regression_reads_raw_inputs():
    """The deployed feature is x . w + b on raw activations: it must equal the fitted
    model's decision function on standardised ones."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    x = rng.normal(loc=3.0, scale=[1, 5, 0.1, 2], size=(400, 4))
    logit = (x - 3.0) @ np.array([1.0, -0.2, 8.0, 0.0])
    y = (logit + rng.normal(size=400) * 0.3 > 0).astype(int)
    fitted = fit_logistic(x[:300], y[:300], x[300:], y[300:], grid=(0.1,))
    mean, scale = x[:300].mean(0), x[:300].std(0)
    reference = LogisticRegression(C=0.1, max_iter=5000).fit((x[:300] - mean) / scale, y[:300])
    np.testing.assert_allclose(
        x[300:] @ fitted.weights + fitted.bias,
        reference.decision_function((x[300:] - mean) / scale),
        rtol=1e-4,
        atol=1e-4,
    )
    assert fitted.calib_auroc > 0.95


def test_running_means_are_sampled_from_min_tokens_to_the_whole_response():
    from monitor.lab.pooling import prefix_lengths

    assert prefix_lengths(3, 4, 8) == [3]  # too short to fire: only the whole response
    assert prefix_lengths(40, 4, 8)[0] == 4 and prefix_lengths(40, 4, 8)[-1] == 40
    assert len(prefix_lengths(40, 4, 8)) == 8
    assert prefix_lengths(6, 4, 8) == [4, 5, 6]
    assert prefix_lengths(40, 4, 0) == [40]


def test_each_example_weighs_one_and_controls_share_their_fraction():
    from monitor.lab.datasets import Example, Message
    from monitor.lab.train import group_first, group_max, sample_weights

    def example(concept):
        turns = (Message(role="user", content="q"), Message(role="assistant", content="a"))
        return Example(messages=turns, label=0, concept=concept, split="train")

    examples = [example("deception"), example("deception"), example("control")]
    owner = np.array([0, 0, 0, 1, 2, 2])
    weights = sample_weights(examples, owner, 0.05)
    np.testing.assert_allclose(weights[:3].sum(), 1.0)
    np.testing.assert_allclose(weights[3], 1.0)
    np.testing.assert_allclose(weights[4:].sum(), 0.05 * 2)
    np.testing.assert_array_equal(group_max(np.array([1.0, 5, 2, 3, 0, 9]), owner), [5, 3, 9])
    np.testing.assert_array_equal(group_first(np.array([7, 7, 7, 8, 9, 9]), owner), [7, 8, 9])
