import numpy as np
import pytest
import torch

from bayesrad.errors import ModelError, ModelFileError
from bayesrad.imaging.pretrain import nt_xent, pretrain_volumes, random_patch_mask, read_loss_curve


def blob_volumes(n=12, size=16, seed=0):
    """Gaussian blobs of random position and width: structure an inpainting model can learn."""
    g = np.random.default_rng(seed)
    ax = np.arange(size) - size / 2
    zz, yy, xx = np.meshgrid(ax, ax, ax, indexing="ij")
    vols = []
    for _ in range(n):
        c, w, a = g.uniform(-3, 3, 3), g.uniform(2, 5), g.uniform(0.5, 1.5)
        vols.append(a * np.exp(-((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) / (2 * w**2)))
    return torch.as_tensor(np.stack(vols)[:, None], dtype=torch.float32)


def test_random_patch_mask_hides_the_stated_fraction():
    mask = random_patch_mask((3, 1, 16, 16, 16), 4, 0.25, torch.Generator().manual_seed(0))
    assert mask.shape == (3, 1, 16, 16, 16)
    assert torch.allclose(mask.mean(dim=(1, 2, 3, 4)), torch.full((3,), 16 / 64))


def test_nt_xent_prefers_matching_views():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 16, generator=g)
    assert nt_xent(z, z + 0.01 * torch.randn(8, 16, generator=g)) < nt_xent(z, torch.randn(8, 16, generator=g))


def test_inpainting_loss_falls_and_files_are_written(tmp_path):
    result = pretrain_volumes(blob_volumes(), tmp_path, width=4, steps=24, batch_size=4, lr=3e-3,
                              patch_size=4, mask_ratio=0.4, contrastive_weight=0.0, keep_checkpoint=False)
    losses = np.asarray(result.loss_history)
    assert len(losses) == 24
    assert losses[-8:].mean() < 0.5 * losses[:4].mean()
    assert (tmp_path / "encoder.safetensors").is_file() and not (tmp_path / "checkpoint.pt").exists()
    assert read_loss_curve(tmp_path) == result.loss_history


def test_interrupted_run_resumes_to_identical_weights(tmp_path):
    vols = blob_volumes(4, size=8)
    kwargs = dict(width=4, steps=4, batch_size=2, patch_size=4, contrastive_weight=0.1, checkpoint_every=2)
    full = pretrain_volumes(vols, tmp_path / "full", **kwargs)
    pretrain_volumes(vols, tmp_path / "cut", stop_at=2, **kwargs)
    resumed = pretrain_volumes(vols, tmp_path / "cut", **kwargs)
    assert resumed.loss_history == full.loss_history
    for a, b in zip(full.encoder.state_dict().values(), resumed.encoder.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ModelFileError, match="other settings"):
        pretrain_volumes(vols, tmp_path / "cut", **{**kwargs, "width": 8})


def test_bad_volumes_are_refused(tmp_path):
    with pytest.raises(ModelError, match=r"\(N, C, S, S, S\)"):
        pretrain_volumes(torch.zeros(2, 16, 16, 16), tmp_path)
    bad = blob_volumes(2)
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ModelError, match="NaN"):
        pretrain_volumes(bad, tmp_path)
