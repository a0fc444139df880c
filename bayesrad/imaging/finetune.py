"""Supervised fine-tuning of a 3D encoder with a linear head on a patient-level target.

``VolumeRegressor`` (sklearn-style) trains ``encoder -> pooled features -> linear`` end to end
on preprocessed volumes and a continuous target (e.g. a tumour phenotype or a target node of the
model), starting from random weights or from a pretrained encoder (``encoder_dir``). Training
uses only the patients passed to ``fit``: ``validation_fraction`` of them are held out inside
``fit`` for early stopping (the weights of the epoch with the lowest validation error are kept),
so a test split is never looked at. The fitted ``module_`` maps a volume (B, C, S, S, S) to the
prediction (B, 1) in the target's units and is what ``bayesrad.imaging.saliency`` explains.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from bayesrad.errors import ModelError, NotFittedError
from bayesrad.imaging.encoders import EncoderConfig, VolumeEncoder, load_encoder
from bayesrad.imaging.pretrain import resolve_device


class _EncoderHead(nn.Module):
    """``volume -> encoder features -> linear -> * scale + shift`` (target units)."""

    def __init__(self, encoder: VolumeEncoder, shift: float, scale: float):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, 1)
        self.register_buffer("shift", torch.tensor(float(shift)))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)) * self.scale + self.shift


def _as_volumes(X, who: str) -> torch.Tensor:
    x = X.float() if isinstance(X, torch.Tensor) else torch.as_tensor(np.asarray(X), dtype=torch.float32)
    if x.ndim != 5 or not (x.shape[2] == x.shape[3] == x.shape[4]):
        raise ModelError(f"{who} takes volumes of shape (N, C, S, S, S), got {tuple(x.shape)}; use preprocess_cohort")
    if not torch.isfinite(x).all():
        raise ModelError(f"{who} input contains NaN/inf voxels; check the preprocessing")
    return x


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Left-right flips and integer shifts of up to 2 voxels (physically plausible, label preserving)."""
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None, None], x.flip(2), x)
    shifts = torch.randint(-2, 3, (3,), generator=gen).tolist()
    return torch.roll(x, shifts=shifts, dims=(2, 3, 4))


class VolumeRegressor:
    """A 3D encoder with a linear head, fine-tuned on a continuous patient-level target.

    Parameters
    ----------
    encoder, width : backbone (``ENCODERS``) and base width when starting from random weights.
    encoder_dir : a saved encoder (``pretrain_encoder``) to start from instead (its architecture
        wins over ``encoder``/``width``; its input shape must match the volumes).
    epochs : maximum training epochs; ``patience`` epochs without a better validation error stop.
    batch_size, lr, weight_decay : AdamW training on the standardised target (mean squared error).
    validation_fraction : share of the ``fit`` patients held out for early stopping (>= 2 patients).
    augment : random left-right flips and shifts of up to 2 voxels during training.
    seed : initialisation, split and batching.
    device : ``"auto"`` (CUDA when present, with bfloat16 autocast), ``"cpu"`` or ``"cuda"``.

    Fitted attributes: ``module_`` (eval mode, CPU; volume (B, C, S, S, S) -> (B, 1) in target
    units), ``history_`` (per epoch: training and validation mean squared error, standardised
    units), ``best_epoch_``, ``validation_r2_`` (R^2 on the inner validation patients at the
    best epoch), ``volume_shape_``.
    """

    def __init__(self, encoder: str = "resnet", width: int = 8, encoder_dir=None, epochs: int = 60,
                 batch_size: int = 8, lr: float = 1e-3, weight_decay: float = 1e-4, validation_fraction: float = 0.2,
                 patience: int = 15, augment: bool = True, seed: int = 0, device: str = "auto"):
        self.encoder = encoder
        self.width = width
        self.encoder_dir = encoder_dir
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.augment = augment
        self.seed = seed
        self.device = device

    def _initial_encoder(self, x: torch.Tensor) -> VolumeEncoder:
        if self.encoder_dir is None:
            return VolumeEncoder(EncoderConfig(self.encoder, int(x.shape[1]), int(x.shape[-1]), int(self.width)))
        encoder, _ = load_encoder(self.encoder_dir)
        cfg = encoder.config
        if (cfg.in_channels, cfg.size) != (x.shape[1], x.shape[-1]):
            raise ModelError(
                f"encoder {str(self.encoder_dir)!r} takes ({cfg.in_channels}, {cfg.size}^3) volumes, got "
                f"({x.shape[1]}, {x.shape[-1]}^3); preprocess with the encoder's own PreprocessConfig"
            )
        return encoder.train()

    def fit(self, X, y) -> "VolumeRegressor":
        """Fit on volumes ``X`` (N, C, S, S, S) and targets ``y`` (N,), float."""
        x = _as_volumes(X, "VolumeRegressor")
        target = np.asarray(y, dtype=float).ravel()
        if len(target) != len(x):
            raise ModelError(f"VolumeRegressor: {len(x)} volumes but {len(target)} targets; give one per patient")
        if not np.isfinite(target).all():
            raise ModelError("VolumeRegressor: the target holds NaN/inf; drop those patients before fitting")
        n_val = int(round(self.validation_fraction * len(x)))
        if n_val < 2 or len(x) - n_val < 4:
            raise ModelError(
                f"VolumeRegressor needs >= 4 training and >= 2 validation patients; got {len(x)} patients with "
                f"validation_fraction={self.validation_fraction}"
            )
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(x))
        val, train = order[:n_val], order[n_val:]
        shift, scale = float(target[train].mean()), float(target[train].std() or 1.0)
        z = torch.as_tensor((target - shift) / scale, dtype=torch.float32)
        dev = resolve_device(self.device)
        torch.manual_seed(self.seed)
        model = _EncoderHead(self._initial_encoder(x), shift, scale).to(dev)
        optimiser = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
        best, best_state, best_epoch, history = np.inf, None, -1, []
        x_val, z_val = x[val], z[val].to(dev)
        for epoch in range(self.epochs):
            model.train()
            perm = torch.as_tensor(train)[torch.randperm(len(train), generator=gen)]
            total = 0.0
            for start in range(0, len(perm), self.batch_size):
                idx = perm[start:start + self.batch_size]
                if len(idx) < 2:
                    continue  # BatchNorm needs more than one volume
                xb = _augment(x[idx], gen) if self.augment else x[idx]
                with torch.autocast(**amp):
                    pred = model.head(model.encoder(xb.to(dev))).float()[:, 0]
                loss = ((pred - z[idx].to(dev)) ** 2).mean()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += loss.item() * len(idx)
            model.eval()
            with torch.no_grad(), torch.autocast(**amp):
                pred_val = torch.cat([model.head(model.encoder(x_val[i:i + 32].to(dev))).float()[:, 0]
                                      for i in range(0, len(x_val), 32)])
            val_mse = float(((pred_val - z_val) ** 2).mean())
            history.append({"epoch": epoch, "train_mse": total / len(train), "validation_mse": val_mse})
            if val_mse < best:
                best, best_epoch, best_state = val_mse, epoch, copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= self.patience:
                break
        model.load_state_dict(best_state)
        self.module_ = model.cpu().eval()
        self.history_ = history
        self.best_epoch_ = best_epoch
        self.validation_r2_ = 1.0 - best / float(z[val].var(unbiased=False).clamp_min(1e-12))
        self.volume_shape_ = tuple(x.shape[1:])
        return self

    @torch.no_grad()
    def predict(self, X) -> np.ndarray:
        """Predicted target (N,) in the target's units."""
        if not hasattr(self, "module_"):
            raise NotFittedError("VolumeRegressor is not fitted; call fit(X, y) first")
        x = _as_volumes(X, "VolumeRegressor")
        if tuple(x.shape[1:]) != self.volume_shape_:
            raise ModelError(f"VolumeRegressor was fitted on volumes {self.volume_shape_}, got {tuple(x.shape[1:])}")
        return torch.cat([self.module_(x[i:i + 32])[:, 0] for i in range(0, len(x), 32)]).numpy()


__all__ = ["VolumeRegressor"]
