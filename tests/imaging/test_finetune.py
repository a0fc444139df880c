import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score

from bayesrad.errors import ModelError, NotFittedError
from bayesrad.imaging.encoders import build_encoder, save_encoder
from bayesrad.imaging.finetune import VolumeRegressor


def bright_blobs(n=48, size=16, seed=0):
    """One Gaussian blob per volume at a random place; the target is its peak brightness."""
    g = np.random.default_rng(seed)
    ax = np.arange(size) - size / 2
    zz, yy, xx = np.meshgrid(ax, ax, ax, indexing="ij")
    target = g.uniform(0.5, 2.0, n)
    vols = []
    for a in target:
        c, w = g.uniform(-3, 3, 3), g.uniform(2.0, 3.5)
        vols.append(a * np.exp(-((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) / (2 * w**2)))
    x = np.stack(vols)[:, None] + g.normal(0, 0.05, (n, 1, size, size, size))
    return torch.as_tensor(x, dtype=torch.float32), target


def test_fine_tuned_encoder_predicts_a_held_out_target():
    x, y = bright_blobs()
    model = VolumeRegressor(width=4, epochs=30, batch_size=8, lr=3e-3, patience=30, seed=0, device="cpu")
    model.fit(x[:36], y[:36])
    assert r2_score(y[36:], model.predict(x[36:])) > 0.8
    # early stopping kept the best validation epoch, judged on patients held out inside fit
    val = [h["validation_mse"] for h in model.history_]
    assert model.best_epoch_ == int(np.argmin(val)) and model.validation_r2_ > 0.5
    # the module predicts in the target's units (what saliency differentiates)
    with torch.no_grad():
        assert np.allclose(model.module_(x[36:])[:, 0].numpy(), model.predict(x[36:]), atol=1e-5)


def test_fine_tuning_starts_from_a_saved_encoder(tmp_path):
    x, y = bright_blobs(n=24)
    torch.manual_seed(3)
    save_encoder(build_encoder("resnet", 1, 16, 4), tmp_path)
    model = VolumeRegressor(encoder_dir=tmp_path, epochs=2, seed=0, device="cpu").fit(x, y)
    assert model.module_.encoder.config.width == 4 and len(model.history_) == 2
    with pytest.raises(ModelError, match="takes \\(1, 16\\^3\\) volumes"):
        VolumeRegressor(encoder_dir=tmp_path, epochs=1).fit(torch.zeros(12, 2, 16, 16, 16), np.arange(12.0))


def test_regressor_errors_name_the_problem():
    with pytest.raises(NotFittedError):
        VolumeRegressor().predict(torch.zeros(1, 1, 16, 16, 16))
    with pytest.raises(ModelError, match="one per patient"):
        VolumeRegressor().fit(torch.zeros(10, 1, 16, 16, 16), np.zeros(9))
    with pytest.raises(ModelError, match="validation"):
        VolumeRegressor().fit(torch.zeros(4, 1, 16, 16, 16), np.zeros(4))
    with pytest.raises(ModelError, match="NaN"):
        VolumeRegressor().fit(torch.zeros(10, 1, 16, 16, 16), np.full(10, np.nan))
