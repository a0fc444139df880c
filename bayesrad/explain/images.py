"""Image nodes linked to saliency maps.

A latent node over a ``deep`` block (``bayesrad embed``: one column per pooled feature of a
3D encoder, ``<modalities>_deep_<j>``) is the graph's image node. Its part of the target's
linear predictor is linear in the block's standardised columns: E[z | columns] is the exact
Gaussian posterior mean of the latent (``model.compile.latent_posterior``; affine in the
columns, the parents only shifting it), and the target's predictor is linear in z along the
linear paths from the node (continuous or latent intermediates, as ``path_contributions``).
That affine map, averaged over posterior draws of the globals, is a linear head on the
encoder's features; ``bayesrad.imaging.saliency.ImagePredictor`` puts it behind the encoder so
that the existing saliency maps (``saliency_map``, ``save_heatmap``) show which voxels move the
node's contribution for one patient.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import torch

from bayesrad.errors import CohortError, ModelError

_DEEP = re.compile(r"_deep_(\d+)$")


def image_nodes(model) -> list[str]:
    """Latent nodes whose columns are all raw encoder features (``*_deep_<j>``)."""
    out = []
    for name, kind in model.layout_.kind.items():
        cols = model.preprocessor_.stats_[name]["columns"] if kind == "latent" else []
        if cols and all(_DEEP.search(c) for c in cols):
            out.append(name)
    return out


def image_head(model, node: str, target: str, which: int = 0, n_samples: int | None = None
               ) -> np.ndarray:
    """d(target's linear predictor, column ``which``) / d(node's standardised block columns),
    averaged over posterior draws: shape (p,), p the node's columns.

    The target's linear predictor is in the model's units: the logit for a binary target,
    standardised units for a continuous one, log time (model scale) for survival, the logit
    of level ``which + 1`` against the first for a categorical one.
    """
    from bayesrad.model.compile import Backend, latent_posterior

    layout = model.layout_
    for name, role in ((node, "node"), (target, "target")):
        if name not in layout.kind:
            raise ModelError(f"image_head: {role} {name!r} is not a node of the graph "
                             f"(nodes: {model.graph_.nodes})")
    if layout.kind[node] != "latent":
        raise ModelError(f"image_head: {node!r} is {layout.kind[node]}; an image node is a "
                         "latent node over a deep (embedding) block")
    graph = nx.DiGraph(model.graph_.edges)
    paths = [p for p in (nx.all_simple_paths(graph, node, target)
                         if node in graph and target in graph else [])
             if all(layout.kind[n] in ("continuous", "latent") for n in p[1:-1])]
    if not paths:
        raise ModelError(f"image_head: no linear directed path from {node!r} to {target!r} "
                         "(intermediate nodes must be continuous or latent); pick the node's "
                         "child as the target")
    be = Backend("pyro")
    g = model.posterior_samples(n_samples)
    # the node's effect on the target's predictor, summed over linear paths: (S, k, out)
    effect = 0
    for path in paths:
        e = None
        for p, c in zip(path[:-1], path[1:]):
            w = layout.coef(g, c, p, be)
            e = w if e is None else e @ w
        effect = effect + e
    p_cols = len(model.preprocessor_.stats_[node]["columns"])
    k = layout.latent_dim[node]
    # E[z | x] at x = 0 and at the p unit vectors (every column observed): the affine map's
    # slope, column by column, computed by the model's own posterior (draws (S, 1, ...))
    x = torch.cat([torch.zeros(1, p_cols), torch.eye(p_cols)]).float()
    m = torch.ones_like(x, dtype=torch.bool)
    g1 = {key: v.unsqueeze(1) for key, v in g.items()}
    with torch.no_grad():
        mean, _ = latent_posterior(layout, node, g1, torch.zeros(k), x, m, be, x[:, 0])
    slope = mean[..., 1:, :] - mean[..., :1, :]                      # (S, 1, p, k)
    head = (slope[:, 0] @ effect[..., which:which + 1])[..., 0]        # (S, p)
    return head.double().mean(0).numpy()


def image_predictor(model, node: str, target: str, encoder, which: int = 0,
                    n_samples: int | None = None):
    """``ImagePredictor``: volume -> the node's part of the target's linear predictor (model
    units, relative to a patient at the training mean of every column)."""
    from bayesrad.imaging.saliency import ImagePredictor

    st = model.preprocessor_.stats_[node]
    if st.get("transform"):
        raise ModelError(f"image node {node!r}: its columns are transformed "
                         f"({st['transform']}); saliency needs the raw encoder features")
    index = []
    for col in st["columns"]:
        match = _DEEP.search(col)
        if not match:
            raise ModelError(f"image node {node!r}: column {col!r} is not a raw encoder "
                             "feature (<modalities>_deep_<j>); embed without PCA "
                             "(`bayesrad embed --pca-dim 0`) to link saliency maps")
        index.append(int(match.group(1)))
    f = encoder.feature_dim
    if max(index) >= f:
        raise ModelError(f"image node {node!r} uses feature {max(index)} but the encoder gives "
                         f"{f}; pass the encoder that made the deep block")
    coef, mean, scale = np.zeros(f), np.zeros(f), np.ones(f)
    coef[index] = image_head(model, node, target, which, n_samples)
    mean[index], scale[index] = st["mean"], st["sd"]
    return ImagePredictor(encoder, coef[None], [0.0], mean, scale)


def image_saliency(model, cohort, node: str, patient: str, target: str,
                   encoder_dir: str | os.PathLike, method: str = "integrated_gradients",
                   out_dir: str | os.PathLike | None = None, which: int = 0,
                   n_samples: int | None = None) -> dict:
    """The saliency map of image node ``node`` for one patient, toward ``target``.

    ``cohort``: a ``Cohort`` with the patient's images; ``encoder_dir``: the encoder that made
    the deep block (a folder or a packaged name such as ``"encoder_small"``); ``method``: one
    of ``bayesrad.imaging.saliency.METHODS``. Returns ``{"heatmap": (S, S, S) array on the
    preprocessed grid, "contribution": the node's part of the target's linear predictor for
    this patient (model units, relative to the training means), "png"/"nifti": paths}``
    (paths only with ``out_dir``: ``saliency_<node>_<patient>.png`` and ``.nii.gz`` on the
    original image's grid, via ``save_heatmap``).
    """
    from bayesrad.imaging.encoders import load_encoder
    from bayesrad.imaging.saliency import save_heatmap, saliency_map
    from bayesrad.imaging.transforms import PreprocessConfig, preprocess_patient

    if not Path(encoder_dir).exists():
        from bayesrad.imaging.embed import packaged_encoder

        encoder_dir = packaged_encoder(str(encoder_dir))
    encoder, record = load_encoder(encoder_dir)
    config = PreprocessConfig.from_dict(record["preprocessing"])
    table = getattr(cohort, "images", None)
    if table is None or patient not in set(table["patient_id"]):
        raise CohortError(f"image_saliency: patient {patient!r} has no images in the cohort; "
                          f"saliency of {node!r} needs its {list(config.modalities)} images")
    predictor = image_predictor(model, node, target, encoder, which, n_samples)
    volume = preprocess_patient(table, patient, config)
    heat = saliency_map(predictor, volume.image, method=method)
    with torch.no_grad():
        contribution = float(predictor(volume.image[None])[0, 0])
    out = {"heatmap": heat, "contribution": contribution}
    if out_dir is not None:
        out.update(save_heatmap(heat, volume.affine, volume.reference, out_dir,
                                name=f"saliency_{node}_{patient}",
                                title=f"{node} -> {target}, patient {patient} ({method})"))
    return out


def link_saliency(contributions: pd.DataFrame, model, cohort, encoder_dir, out_dir,
                  method: str = "integrated_gradients", max_patients: int = 20) -> pd.DataFrame:
    """``contributions`` (a ``shapley`` table) with a ``saliency`` column: for the rows of
    image nodes, the path of that patient's saliency map (PNG, written to ``out_dir``; at most
    ``max_patients`` patients), empty elsewhere and for patients without images."""
    out = contributions.copy()
    out["saliency"] = ""
    nodes = [n for n in image_nodes(model) if n in set(out["node"])]
    if not nodes:
        return out
    have = set(cohort.images["patient_id"]) if getattr(cohort, "images", None) is not None \
        else set()
    patients = [p for p in out["patient"].unique() if p in have][:max_patients]
    target = str(out["target"].iloc[0])
    for node in nodes:
        for patient in patients:
            res = image_saliency(model, cohort, node, patient, target, encoder_dir, method,
                                 out_dir)
            rows = (out["node"] == node) & (out["patient"] == patient)
            out.loc[rows, "saliency"] = str(res["png"])
    return out
