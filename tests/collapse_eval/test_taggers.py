"""Numeric taggers: the noisy tagger has the error rates it is given; the discriminator learns."""

from __future__ import annotations

import numpy as np
import torch

from collapse_eval.rng import ChainRandom
from collapse_eval.taggers import (
    LogisticDiscriminator,
    noisy_tags,
    oracle_tags,
    quadratic_features,
    tagger_rates,
)
from collapse_eval.tensor_mix import ORIGIN_GENERATED, ORIGIN_ORIGINAL


def test_noisy_tags_have_the_given_rates_and_never_change_for_a_sample() -> None:
    n = 20_000
    origin = np.where(np.arange(n) % 2, ORIGIN_GENERATED, ORIGIN_ORIGINAL).astype(np.int8)
    uid = np.arange(n, dtype=np.int64)
    label, score = noisy_tags(origin, uid, [1, 2, 3], tpr=0.9, fpr=0.05)
    tpr, fpr = tagger_rates(label, origin)
    assert np.allclose(tpr, 0.9, atol=0.015) and np.allclose(fpr, 0.05, atol=0.01)
    again, _ = noisy_tags(origin[:100], uid[:100], [1, 2, 3], tpr=0.9, fpr=0.05)
    assert (again == label[:, :100]).all()  # a sample's tag depends on its id, not the batch
    assert not (label[0] == label[1]).all()  # chains differ
    assert (score == label).all()


def test_oracle_tags_are_the_truth() -> None:
    origin = np.array([0, 1, 1, 0], dtype=np.int8)
    label, score = oracle_tags(origin, chains=2)
    assert label.tolist() == [[0, 1, 1, 0]] * 2
    tpr, fpr = tagger_rates(label, origin)
    assert (tpr == 1).all() and (fpr == 0).all()


def _rates(human_std: float, generated_std: float, shift: float = 0.0) -> tuple[float, float]:
    rng = ChainRandom(range(4))
    human = rng.normal(0, "h", (2000, 1)) * human_std
    generated = rng.normal(0, "g", (2000, 1)) * generated_std + shift
    test_h = rng.normal(1, "h", (2000, 1)) * human_std
    test_g = rng.normal(1, "g", (2000, 1)) * generated_std + shift
    disc = LogisticDiscriminator().fit(quadratic_features(human), quadratic_features(generated))
    tpr = (disc.score(quadratic_features(test_g)) > 0.5).double().mean().item()
    fpr = (disc.score(quadratic_features(test_h)) > 0.5).double().mean().item()
    return tpr, fpr


def test_the_discriminator_catches_a_collapsed_or_shifted_model_and_not_a_good_one() -> None:
    tpr, fpr = _rates(1.0, 0.3)  # collapsed variance: a quadratic boundary |x| < c
    # Bayes-optimal at equal priors: |x| < 0.488, TPR = 0.897, FPR = 0.374.
    assert abs(tpr - 0.897) < 0.03 and abs(fpr - 0.374) < 0.03
    tpr, fpr = _rates(1.0, 1.0, shift=2.0)
    assert tpr > 0.8 and fpr < 0.2
    tpr, fpr = _rates(1.0, 1.0)  # a perfect model: no better than chance
    assert abs(tpr - fpr) < 0.1


def test_quadratic_features_cover_every_product_once() -> None:
    x = torch.tensor([[[1.0, 2.0, 3.0]]])
    assert quadratic_features(x)[0, 0].tolist() == [1, 2, 3, 1, 2, 3, 4, 6, 9]
