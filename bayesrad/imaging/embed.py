"""Image embeddings as the cohort's ``deep`` block.

``embed_cohort`` preprocesses each patient's images exactly as the encoder's pretraining did
(the ``PreprocessConfig`` stored in ``encoder.json``), runs the encoder and returns one row per
patient: the encoder's pooled features, or their first ``pca_dim`` principal components.
Patients without the encoder's modalities are absent from the block (a missing modality).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA

from bayesrad.errors import ModelError
from bayesrad.imaging.encoders import VolumeEncoder, load_encoder
from bayesrad.imaging.pretrain import resolve_device
from bayesrad.imaging.transforms import PreprocessConfig, preprocess_cohort

ID = "patient_id"


@torch.no_grad()
def embed_volumes(encoder: VolumeEncoder, volumes: torch.Tensor, batch_size: int = 16, device: str = "auto") -> np.ndarray:
    """Pooled features (N, feature_dim) of preprocessed volumes (N, C, S, S, S), encoder in eval mode.

    On CUDA the forward pass runs in bfloat16 autocast (features returned as float32).
    """
    cfg = encoder.config
    if volumes.ndim != 5 or volumes.shape[1] != cfg.in_channels or volumes.shape[-1] != cfg.size:
        raise ModelError(
            f"encoder expects volumes (N, {cfg.in_channels}, {cfg.size}, {cfg.size}, {cfg.size}), got "
            f"{tuple(volumes.shape)}; preprocess with the encoder's own PreprocessConfig"
        )
    dev = resolve_device(device)
    encoder = encoder.to(dev).eval()
    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        out = [encoder(volumes[i:i + batch_size].to(dev).float()).float().cpu() for i in range(0, len(volumes), batch_size)]
    encoder.cpu()
    return torch.cat(out).numpy()


def embedding_frame(features: np.ndarray, patient_ids, prefix: str, pca_dim: int | None = None,
                    seed: int = 0) -> pd.DataFrame:
    """Features (N, F) -> DataFrame indexed by ``patient_id``; with ``pca_dim``, its first principal components.

    Columns are ``{prefix}_deep_{j:03d}`` (raw) or ``{prefix}_deep_pc{j:02d}`` (PCA, j from 1).
    With PCA the explained variance ratios are in ``frame.attrs["explained_variance_ratio"]``.
    """
    features = np.asarray(features, dtype=float)
    index = pd.Index([str(p) for p in patient_ids], name=ID)
    if pca_dim is None:
        return pd.DataFrame(features, index=index, columns=[f"{prefix}_deep_{j:03d}" for j in range(features.shape[1])])
    limit = min(features.shape)
    if not 1 <= int(pca_dim) <= limit:
        raise ModelError(
            f"pca_dim={pca_dim} must lie in [1, {limit}] = min(patients {features.shape[0]}, features {features.shape[1]}); "
            f"lower pca_dim or embed more patients"
        )
    pca = PCA(n_components=int(pca_dim), random_state=seed).fit(features)
    frame = pd.DataFrame(pca.transform(features), index=index,
                         columns=[f"{prefix}_deep_pc{j + 1:02d}" for j in range(int(pca_dim))])
    frame.attrs["explained_variance_ratio"] = pca.explained_variance_ratio_.tolist()
    return frame


def embed_cohort(cohort, encoder_dir: str | os.PathLike, pca_dim: int | None = None, batch_size: int = 16,
                 device: str = "auto", patient_ids=None) -> pd.DataFrame:
    """The ``deep`` block of a cohort from a saved encoder (``bayesrad embed``).

    Parameters
    ----------
    cohort : ``Cohort`` with an images table holding the encoder's modalities.
    encoder_dir : folder written by ``pretrain_encoder`` (``encoder.safetensors`` + ``encoder.json``).
    pca_dim : reduce the ``feature_dim`` pooled features to this many principal components
        (fitted on this cohort); None keeps all features.
    batch_size, device : inference batching and device (``"auto"``: CUDA when present).
    patient_ids : restrict to these patients.

    Returns
    -------
    DataFrame (patients with all modalities x features), indexed by ``patient_id``, ready for
    ``cohort.with_block("deep", frame)``; columns ``<modalities>_deep_<j>`` (lower case).
    """
    encoder, record = load_encoder(encoder_dir)
    config = PreprocessConfig.from_dict(record["preprocessing"])
    volumes, _, ids = preprocess_cohort(cohort, config, patient_ids)
    features = embed_volumes(encoder, volumes, batch_size, device)
    prefix = "_".join(m.lower() for m in config.modalities) + (f"_{config.roi.lower()}" if config.roi else "")
    return embedding_frame(features, ids, prefix, pca_dim)


def packaged_encoder(name: str = "encoder_small"):
    """The folder of an encoder shipped with the package (``bayesrad/imaging/pretrained/<name>``,
    found with importlib.resources so that it works from an installed wheel), for
    ``embed_cohort(cohort, packaged_encoder(), ...)`` or ``bayesrad embed --encoder <name>``."""
    from importlib import resources
    from pathlib import Path

    from bayesrad.errors import MissingFileError

    root = resources.files("bayesrad.imaging") / "pretrained"
    folder = root / name
    if not (folder / "encoder.json").is_file():
        shipped = sorted(p.name for p in root.iterdir() if (p / "encoder.json").is_file())
        raise MissingFileError(f"no packaged encoder {name!r}; the package ships {shipped} "
                               "(or give the folder written by `bayesrad pretrain`)")
    return Path(str(folder))


__all__ = ["embed_cohort", "embed_volumes", "embedding_frame", "packaged_encoder"]
