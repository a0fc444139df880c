"""benchmarks/settings.py, notebook 04's helpers: the cheap parts (the notebook itself, run by
nbmake, checks its figures against benchmarks/results/settings.json)."""

import numpy as np
import torch

from bayesrad.evaluate import metrics as M


def test_attention_on_lesion_counts_the_patches_that_hold_lesion(settings):
    masks = torch.zeros(2, 1, 16, 16, 16)
    masks[:, 0, 0:4, 4:8, 9:11] = 1.0  # inside one 4^3 patch: (x, y, z) patch (0, 1, 2)
    lesion_patch = 0 * 16 + 1 * 4 + 2  # raster order of to_instances, z fastest
    attention = np.full((2, 64), 1 / 64)
    attention[1] = 0.0
    attention[1, lesion_patch] = 1.0
    shares = settings._attention_shares(attention, masks, 4)
    np.testing.assert_allclose(shares["uniform_on_lesion"], [1 / 64, 1 / 64])
    np.testing.assert_allclose(shares["attention_on_lesion"], [1 / 64, 1.0])


def test_liver_metrics_agree_with_bayesrad_metrics(settings):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1.0, 1.0, 1.0], 90)
    y = rng.integers(0, 3, 90)
    reference = M.multiclass_metrics(y, probs)
    for name in ("accuracy", "balanced_accuracy", "top_label_ece"):
        assert np.isclose(settings.LIVER_METRICS[name](y, probs), reference[name]), name
    one_vs_rest = [M.auc((y == k).astype(float), probs[:, k]) for k in range(3)]
    assert np.isclose(settings.LIVER_METRICS["macro_auc"](y, probs), np.mean(one_vs_rest))


def test_feature_names_are_shortened_to_phase_and_feature(settings):
    assert settings._liver_feature_name("ct_arterial_lesion_original_firstorder_mean") == "arterial_mean"
    assert settings._liver_feature_name("ct_arterial_lesion_original_shape_sphericity") == "arterial_sphericity"
