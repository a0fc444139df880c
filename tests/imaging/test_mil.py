import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bayesrad.errors import ModelError, NotFittedError
from bayesrad.imaging.mil import AttentionMILClassifier, to_instances


def bags_with_a_hot_patch(n=48, size=16, patch=4, seed=0):
    """Class 1 volumes hold one bright 4^3 patch at a random grid position; class 0 none."""
    g = np.random.default_rng(seed)
    x = g.normal(0, 0.3, (n, 1, size, size, size)).astype(np.float32)
    y = np.array([0, 1] * (n // 2))
    where = []
    for i in range(n):
        cell = tuple(g.integers(0, size // patch, 3))
        where.append(cell)
        if y[i]:
            sl = tuple(slice(c * patch, (c + 1) * patch) for c in cell)
            x[(i, 0) + sl] += 2.0
    return torch.as_tensor(x), y, where


def test_instances_tile_the_volume():
    x = torch.arange(2 * 16**3, dtype=torch.float32).view(1, 2, 16, 16, 16)
    bags = to_instances(x, "patch", 8)
    assert bags.shape == (1, 8, 2, 8, 8, 8)
    assert torch.equal(bags[0, 0], x[0, :, :8, :8, :8]) and torch.equal(bags[0, 7], x[0, :, 8:, 8:, 8:])
    assert to_instances(x, "slice", 8).shape == (1, 16, 2, 16, 16)


def test_mil_learns_the_label_and_attends_to_the_hot_patch():
    x, y, where = bags_with_a_hot_patch()
    train, test = slice(0, 32), slice(32, 48)
    model = AttentionMILClassifier(patch_size=4, embed_dim=16, attention_dim=8, epochs=15, batch_size=8, seed=0)
    model.fit(x[train], y[train])
    assert model.loss_history_[-1] < model.loss_history_[0]
    assert (model.predict(x[test]) == y[test]).mean() >= 0.85
    attention = model.attention(x[test])
    assert np.allclose(attention.sum(1), 1.0, atol=1e-5)
    # for positive patients the most attended patch is the hot one
    positives = [i for i in range(16) if y[32 + i] == 1]
    hits = [np.unravel_index(attention[i].argmax(), (4, 4, 4)) == where[32 + i] for i in positives]
    assert np.mean(hits) >= 0.75
    maps = model.attention_map(x[test])
    assert maps.shape == (16, 16, 16, 16)
    assert np.isclose(maps[0, :4, :4, :4].mean(), attention[0, 0])


def test_mil_errors_name_the_problem():
    with pytest.raises(NotFittedError):
        AttentionMILClassifier().predict(torch.zeros(1, 1, 16, 16, 16))
    with pytest.raises(ModelError, match="two classes"):
        AttentionMILClassifier().fit(torch.zeros(4, 1, 16, 16, 16), [1, 1, 1, 1])
    with pytest.raises(ModelError, match="does not divide"):
        AttentionMILClassifier(patch_size=5).fit(torch.zeros(4, 1, 16, 16, 16), [0, 1, 0, 1])


def test_early_stopping_keeps_the_best_validation_epoch_and_never_sees_other_patients():
    x, y, _ = bags_with_a_hot_patch(n=40, seed=1)
    model = AttentionMILClassifier(patch_size=4, embed_dim=8, attention_dim=4, epochs=12, patience=3,
                                   validation_fraction=0.25, seed=0)
    model.fit(x, y)
    train, val = model._split(np.searchsorted(model.classes_, y))
    # stratified and disjoint: 5 of the 20 patients of each class are held out
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 40
    assert np.bincount(y[val]).tolist() == [5, 5]
    assert model.best_epoch_ == int(np.argmin(model.validation_loss_))
    # stopped at most `patience` epochs after the best one
    assert len(model.validation_loss_) <= model.best_epoch_ + 1 + model.patience
    # the kept weights are the best epoch's: their validation loss is the minimum
    with torch.no_grad():
        logits = model.model_(to_instances(x[val], "patch", 4))[0]
    # 15 + 15 training patients: the balanced class weights are all 1
    loss = F.cross_entropy(logits, torch.as_tensor(y[val]))
    assert float(loss) == pytest.approx(min(model.validation_loss_), rel=1e-4)
    with pytest.raises(ModelError, match="validation_fraction"):
        AttentionMILClassifier(validation_fraction=0.7, epochs=1).fit(x, y)
