"""Attention-based multiple-instance learning for patient-level labels.

Only the patient carries a label (e.g. the liver lesion class); the model sees a bag of
instances cut from the preprocessed volume, either non-overlapping cubic patches or axial
slices, encodes each with a small CNN, and pools them with gated attention (Ilse, Tomczak &
Welling 2018, "Attention-based deep multiple instance learning"):

    a_k = softmax_k( w^T [tanh(V h_k) * sigmoid(U h_k)] ),   z = sum_k a_k h_k,   logits = W z.

The attention weights a_k say which patches/slices drove the patient's prediction; they are
exported as a voxel map on the input grid (``attention_map``), which
``bayesrad.imaging.saliency.save_heatmap`` writes as NIfTI aligned with the original image.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from bayesrad.errors import ModelError, NotFittedError
from bayesrad.imaging.pretrain import resolve_device

INSTANCES = ("patch", "slice")


def _as_volumes(X) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X).float()
    if x.ndim != 5:
        raise ModelError(f"MIL input must be volumes of shape (N, C, S, S, S), got {tuple(x.shape)}; use preprocess_cohort")
    if not torch.isfinite(x).all():
        raise ModelError("MIL input contains NaN/inf voxels; check the preprocessing")
    return x


def to_instances(x: torch.Tensor, instance: str, patch_size: int) -> torch.Tensor:
    """Volumes (B, C, S, S, S) -> bags (B, K, C, *instance_shape).

    ``"patch"``: K = (S / patch_size)^3 cubes of ``patch_size``^3, in (x, y, z) raster order.
    ``"slice"``: K = S slices along the last (superior-inferior) axis, each (C, S, S).
    """
    b, c, s = x.shape[0], x.shape[1], x.shape[-1]
    if instance == "slice":
        return x.permute(0, 4, 1, 2, 3)
    g = s // patch_size
    p = x.reshape(b, c, g, patch_size, g, patch_size, g, patch_size)
    return p.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, g**3, c, patch_size, patch_size, patch_size)


class _GatedAttentionMIL(nn.Module):
    def __init__(self, in_channels: int, instance: str, embed_dim: int, attention_dim: int, n_classes: int):
        super().__init__()
        conv, norm, pool = (nn.Conv3d, nn.BatchNorm3d, nn.AdaptiveAvgPool3d) if instance == "patch" else (
            nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d)
        h = embed_dim // 2
        self.instance_encoder = nn.Sequential(
            conv(in_channels, h, 3, padding=1), norm(h), nn.ReLU(),
            conv(h, embed_dim, 3, padding=1, stride=2), norm(embed_dim), nn.ReLU(),
            pool(1), nn.Flatten(),
        )
        self.attention_v = nn.Linear(embed_dim, attention_dim)
        self.attention_u = nn.Linear(embed_dim, attention_dim)
        self.attention_w = nn.Linear(attention_dim, 1)
        self.classifier = nn.Linear(embed_dim, n_classes)

    def forward(self, bags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, k = bags.shape[:2]
        h = self.instance_encoder(bags.flatten(0, 1)).view(b, k, -1)
        scores = self.attention_w(torch.tanh(self.attention_v(h)) * torch.sigmoid(self.attention_u(h))).squeeze(-1)
        attention = torch.softmax(scores, dim=1)
        return self.classifier((attention.unsqueeze(-1) * h).sum(1)), attention


class AttentionMILClassifier:
    """Gated-attention MIL classifier over patches or slices of a 3D volume (sklearn-style).

    Parameters
    ----------
    instance : ``"patch"`` (cubes of ``patch_size``^3 voxels) or ``"slice"`` (axial slices).
    patch_size : cube side in voxels (must divide the volume size).
    embed_dim, attention_dim : instance embedding and attention hidden sizes.
    epochs, batch_size, lr, weight_decay : AdamW training; the loss is class-balanced cross entropy
        (weights from the class frequencies of the training patients).
    augment : random left-right flips during training.
    validation_fraction, patience : stratified share of the ``fit`` patients held out for early
        stopping on the validation loss (0 trains all ``epochs`` on every patient), and the epochs
        without improvement before stopping. The test patients are never seen by ``fit``.
    seed : torch seed for initialisation and batching.
    device : ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.

    Fitted attributes: ``classes_`` (labels, sorted), ``model_``, ``loss_history_`` and
    ``validation_loss_`` (per epoch), ``best_epoch_`` (whose weights are kept), ``n_instances_``,
    ``volume_shape_``.

    A lesion mask can be given as one more channel of ``X`` (``torch.cat([images, masks], 1)``):
    the label stays patient-level, and the instances then know which of their voxels are lesion.
    """

    def __init__(self, instance: str = "patch", patch_size: int = 8, embed_dim: int = 32, attention_dim: int = 16,
                 epochs: int = 40, batch_size: int = 8, lr: float = 3e-3, weight_decay: float = 1e-4,
                 augment: bool = True, validation_fraction: float = 0.2, patience: int = 10, seed: int = 0,
                 device: str = "auto"):
        self.instance = instance
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.attention_dim = attention_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.augment = augment
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.seed = seed
        self.device = device

    def _bags(self, x: torch.Tensor) -> torch.Tensor:
        return to_instances(x, self.instance, self.patch_size)

    def fit(self, X, y) -> "AttentionMILClassifier":
        """Fit on volumes ``X`` (N, C, S, S, S) and patient labels ``y`` (N,), any hashable labels.

        With ``validation_fraction > 0`` a stratified share of these patients is held out for
        early stopping: the weights of the epoch with the lowest class-balanced validation loss
        are kept, and training stops after ``patience`` epochs without improvement.
        """
        if self.instance not in INSTANCES:
            raise ModelError(f"instance={self.instance!r} is unknown; use one of {list(INSTANCES)}")
        x = _as_volumes(X)
        y = np.asarray(y)
        if len(y) != len(x):
            raise ModelError(f"MIL: {len(x)} volumes but {len(y)} labels; give one label per patient")
        if self.instance == "patch" and x.shape[-1] % self.patch_size:
            raise ModelError(f"patch_size={self.patch_size} does not divide the volume size {x.shape[-1]}; choose a divisor")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ModelError(f"MIL needs at least two classes in y, got {self.classes_.tolist()}")
        target = torch.as_tensor(np.searchsorted(self.classes_, y))
        train, val = self._split(target.numpy())
        weights = torch.as_tensor(compute_class_weight("balanced", classes=np.arange(len(self.classes_)),
                                                       y=target[train].numpy()), dtype=torch.float32)
        dev = resolve_device(self.device)
        amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
        torch.manual_seed(self.seed)
        self.model_ = _GatedAttentionMIL(x.shape[1], self.instance, self.embed_dim, self.attention_dim,
                                         len(self.classes_)).to(dev)
        optimiser = torch.optim.AdamW(self.model_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = nn.CrossEntropyLoss(weight=weights.to(dev))
        gen = torch.Generator().manual_seed(self.seed)
        self.loss_history_, self.validation_loss_ = [], []
        best, best_state, self.best_epoch_ = np.inf, None, self.epochs - 1
        for epoch in range(self.epochs):
            self.model_.train()
            order = torch.as_tensor(train)[torch.randperm(len(train), generator=gen)]
            total = 0.0
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                if len(idx) < 2:
                    continue  # BatchNorm needs more than one bag
                xb = x[idx]
                if self.augment:
                    flip = torch.rand(len(idx), generator=gen) < 0.5
                    xb = torch.where(flip[:, None, None, None, None], xb.flip(2), xb)
                with torch.autocast(**amp):
                    logits, _ = self.model_(self._bags(xb.to(dev)))
                loss = loss_fn(logits.float(), target[idx].to(dev))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += loss.item() * len(idx)
            self.loss_history_.append(total / len(train))
            if len(val):
                self.model_.eval()
                with torch.no_grad(), torch.autocast(**amp):
                    logits = torch.cat([self.model_(self._bags(x[val[i:i + 32]].to(dev)))[0].float()
                                        for i in range(0, len(val), 32)])
                val_loss = float(loss_fn(logits, target[val].to(dev)))
                self.validation_loss_.append(val_loss)
                if val_loss < best:
                    best, self.best_epoch_ = val_loss, epoch
                    best_state = copy.deepcopy(self.model_.state_dict())
                elif epoch - self.best_epoch_ >= self.patience:
                    break
        if best_state is not None:
            self.model_.load_state_dict(best_state)
        self.model_.eval()
        self.volume_shape_ = tuple(x.shape[1:])
        self.n_instances_ = int(self._bags(x[:1]).shape[1])
        return self

    def _split(self, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(train, validation) indices: a stratified ``validation_fraction`` of every class."""
        if not self.validation_fraction:
            return np.arange(len(target)), np.array([], dtype=int)
        if not 0.0 < self.validation_fraction < 0.5:
            raise ModelError(f"validation_fraction={self.validation_fraction} must lie in [0, 0.5)")
        rng = np.random.default_rng(self.seed)
        val = []
        for k in range(len(self.classes_)):
            members = rng.permutation(np.flatnonzero(target == k))
            # every class with two or more patients keeps one in each part
            n_val = int(np.clip(round(self.validation_fraction * len(members)), 1, len(members) - 1)) if len(members) > 1 else 0
            val += members[:n_val].tolist()
        val = np.sort(np.asarray(val, dtype=int))
        return np.setdiff1d(np.arange(len(target)), val), val

    def _check(self, X) -> torch.Tensor:
        if not hasattr(self, "model_"):
            raise NotFittedError("AttentionMILClassifier is not fitted; call fit(X, y) first")
        x = _as_volumes(X)
        if tuple(x.shape[1:]) != self.volume_shape_:
            raise ModelError(f"MIL was fitted on volumes {self.volume_shape_}, got {tuple(x.shape[1:])}; preprocess alike")
        return x

    @torch.no_grad()
    def _forward(self, X) -> tuple[np.ndarray, np.ndarray]:
        x = self._check(X)
        dev = next(self.model_.parameters()).device
        probs, attn = [], []
        for start in range(0, len(x), 32):
            logits, a = self.model_(self._bags(x[start:start + 32].to(dev)))
            probs.append(torch.softmax(logits.float(), 1).cpu())
            attn.append(a.cpu())
        return torch.cat(probs).numpy(), torch.cat(attn).numpy()

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, n_classes), columns in the order of ``classes_``."""
        return self._forward(X)[0]

    def predict(self, X) -> np.ndarray:
        """Most probable class label per patient (N,)."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(1)]

    def attention(self, X) -> np.ndarray:
        """Attention weights per instance (N, n_instances); each row sums to 1."""
        return self._forward(X)[1]

    def attention_map(self, X) -> np.ndarray:
        """Attention as a voxel map (N, S, S, S) on the input grid: each voxel carries its instance's weight."""
        x = self._check(X)
        a = torch.as_tensor(self.attention(x))
        s = x.shape[-1]
        if self.instance == "slice":
            return a[:, None, None, :].expand(-1, s, s, s).numpy().copy()
        g = s // self.patch_size
        grid = a.view(-1, g, g, g)
        return grid.repeat_interleave(self.patch_size, 1).repeat_interleave(self.patch_size, 2).repeat_interleave(
            self.patch_size, 3).numpy()


__all__ = ["AttentionMILClassifier", "INSTANCES", "to_instances"]
