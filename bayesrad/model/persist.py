"""Saving and loading a fitted ``HybridBN`` without pickle.

A model directory holds ``graph.yaml`` (the graph), ``params.safetensors`` (the variational
parameters, or the NUTS draws), and ``meta.json`` (format version, package versions,
settings, preprocessing statistics, and the SHA-256 of the two other files). Loading checks
the format version and the hashes before reading anything else, so a file from another
format or one edited by hand is refused with ``ModelFileError``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from bayesrad.errors import MissingFileError, ModelFileError

MODEL_FORMAT = "bayesrad-hybridbn"
# 2: indicator parents centred (Preprocessor enc_mean of binary / categorical nodes)
MODEL_FORMAT_VERSION = 2
_FILES = ("graph.yaml", "params.safetensors", "meta.json")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _versions() -> dict[str, str]:
    import pyro

    try:
        from importlib.metadata import version

        bayesrad_version = version("bayesrad")
    except Exception:  # an uninstalled checkout has no distribution metadata
        bayesrad_version = "unknown"
    return {"bayesrad": bayesrad_version, "torch": torch.__version__, "pyro": pyro.__version__}


def save_model(model, path) -> Path:
    """Write ``model`` to directory ``path`` (created; replaced atomically if it exists)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    model.graph_.to_yaml(tmp / "graph.yaml")
    if model.method_ == "svi":
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.posterior_.state_dict().items()}
    else:
        tensors = {k: v.contiguous() for k, v in model.samples_.items()}
    save_file(tensors, str(tmp / "params.safetensors"))
    settings = {k: v for k, v in model.get_params().items() if k != "graph"}
    meta = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "versions": _versions(),
        "settings": settings,
        "method": model.method_,
        "guide_family": getattr(model, "guide_family_", None),
        "impute": sorted(model.layout_.impute),
        "preprocessing": model.preprocessor_.to_dict(),
        "elbo_history": [float(v) for v in getattr(model, "elbo_history_", [])],
        "sha256": {name: _sha256(tmp / name) for name in ("graph.yaml", "params.safetensors")},
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if path.exists():
        old = path.with_name(path.name + ".old")
        os.replace(path, old)
        os.replace(tmp, path)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        os.replace(tmp, path)
    return path


def load_model(cls, path):
    """Read a directory written by ``save_model`` into a fitted ``cls`` instance."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from bayesrad.graph.graph import Graph
    from bayesrad.model.compile import Layout
    from bayesrad.model.design import Preprocessor
    from bayesrad.model.guide import GlobalPosterior

    path = Path(path)
    if not path.is_dir():
        raise MissingFileError(f"model directory {str(path)!r} does not exist")
    for name in _FILES:
        if not (path / name).is_file():
            raise ModelFileError(f"model {str(path)!r} is incomplete: {name} is missing; "
                                 "save the model again")
    try:
        meta = json.loads((path / "meta.json").read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path / 'meta.json'} is not valid JSON ({exc}); the file was "
                             "damaged or edited") from exc
    if meta.get("format") != MODEL_FORMAT or meta.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} is format {meta.get('format')!r} version {meta.get('format_version')!r};"
            f" this bayesrad reads {MODEL_FORMAT!r} version {MODEL_FORMAT_VERSION}: refit and save "
            "the model with this version")
    for name, digest in (meta.get("sha256") or {}).items():
        if name not in ("graph.yaml", "params.safetensors") or _sha256(path / name) != digest:
            raise ModelFileError(f"{path / name} does not match the hash recorded in meta.json: "
                                 "the file was modified after saving; do not load it")
    if set((meta.get("sha256") or {})) != {"graph.yaml", "params.safetensors"}:
        raise ModelFileError(f"{path / 'meta.json'} lacks the file hashes; the file was edited")
    graph = Graph.from_yaml(path / "graph.yaml")
    model = cls(graph, **meta["settings"])
    try:
        tensors = load_file(str(path / "params.safetensors"))
    except SafetensorError as exc:
        raise ModelFileError(f"{path / 'params.safetensors'} cannot be read: {exc}") from exc
    model.graph_ = graph.copy()
    model.preprocessor_ = Preprocessor.from_dict(model.graph_, meta["preprocessing"])
    model.layout_ = Layout(model.graph_, model.preprocessor_, set(meta["impute"]))
    model.method_ = meta["method"]
    model.device_ = torch.device("cpu")
    model.elbo_history_ = np.asarray(meta.get("elbo_history", []))
    if model.method_ == "svi":
        posterior = GlobalPosterior(model.layout_, meta["guide_family"])
        try:
            posterior.load_state_dict(tensors)
        except RuntimeError as exc:
            raise ModelFileError(f"{path / 'params.safetensors'} does not fit the graph in "
                                 f"graph.yaml: {exc}") from exc
        model.posterior_ = posterior
        model.guide_family_ = meta["guide_family"]
    else:
        model.samples_ = tensors
    return model
