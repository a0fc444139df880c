"""Saving and loading a fitted ``HybridBN`` without pickle.

A model directory holds ``graph.yaml`` (the graph), ``params.safetensors`` (the variational
parameters, or the NUTS draws), and ``meta.json`` (format version, package versions,
settings, preprocessing statistics, and the SHA-256 of the two other files), and
``checksums.json`` (the SHA-256 of all three, ``meta.json`` included, so its scaling statistics
and settings are covered too). Loading checks the format version and every hash before reading
anything else, then that settings are sane and every tensor and statistic is finite, so a file
from another format, one edited by hand or a damaged one is refused with ``ModelFileError``.
Nothing is unpickled and no YAML tag is constructed: no code in a model directory runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from bayesrad.errors import MissingFileError, ModelError, ModelFileError

MODEL_FORMAT = "bayesrad-hybridbn"
# 2: indicator parents centred (Preprocessor enc_mean of binary / categorical nodes)
MODEL_FORMAT_VERSION = 2
_FILES = ("graph.yaml", "params.safetensors", "meta.json")
_CHECKSUMS = "checksums.json"


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
    """Write ``model`` to directory ``path`` (created; replaced atomically if it exists).

    The files are written into a hidden sibling folder (``.<name>.saving.<random>``) that then
    takes the place of ``path`` by renames, so an interruption (Ctrl-C, a crash, a kill) never
    leaves a half-written model at ``path``: the model saved there before stays, whole. The
    sibling is removed on an interruption that Python sees; one left by a killed process is
    removed by the next save to ``path``.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.saving.*"):  # left by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.saving.", dir=path.parent))
    try:
        _write_model_files(model, tmp)
        _swap_in(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _write_model_files(model, tmp: Path) -> None:
    from safetensors.torch import save_file

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
    (tmp / _CHECKSUMS).write_text(json.dumps({name: _sha256(tmp / name) for name in _FILES}, indent=1))


def _swap_in(tmp: Path, path: Path) -> None:
    """Put the finished folder ``tmp`` at ``path``; an existing ``path`` is moved aside first and
    put back if the second rename does not happen (an interruption between the two)."""
    import shutil

    if not path.exists():
        os.replace(tmp, path)
        return
    old = path.with_name(f".{path.name}.old")
    if old.exists():  # left by a killed save, after the new model was in place
        shutil.rmtree(old, ignore_errors=True)
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        if not path.exists():
            os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _check_checksums(path: Path) -> None:
    """``checksums.json`` names every file of the model with its SHA-256 (meta.json too)."""
    target = path / _CHECKSUMS
    if not target.is_file():
        raise ModelFileError(f"model {str(path)!r} has no {_CHECKSUMS} (saved by an older bayesrad, or "
                             "it was removed): load it with that version and save it again, or refit")
    try:
        sums = json.loads(target.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{target} is not valid JSON; the model was damaged or edited") from exc
    if not isinstance(sums, dict) or set(sums) != set(_FILES):
        raise ModelFileError(f"{target} must list exactly {list(_FILES)}; the model was damaged or edited")
    for name in _FILES:
        if _sha256(path / name) != sums[name]:
            raise ModelFileError(f"{path / name} does not match its hash in {_CHECKSUMS}: the file was "
                                 "modified after saving; do not load it (refit, or restore the saved copy)")


# Bounds of every HybridBN setting: a value outside them is a typo or an edited file (n_samples
# 1e12 would try to allocate petabytes), refused before any work. (kind, low, high)
_INT_SETTINGS = {
    "num_steps": (1, 10_000_000), "n_restarts": (1, 1000), "min_steps": (0, 10_000_000),
    "num_warmup": (0, 1_000_000), "num_samples": (1, 1_000_000), "num_chains": (1, 256),
    "n_samples": (1, 1_000_000), "predict_particles": (1, 100_000), "num_particles": (1, 10_000),
    "seed": (0, 2**63 - 1),
}
_OPTIONAL_INT_SETTINGS = {"batch_size": (1, 100_000_000), "num_threads": (1, 4096)}
_FLOAT_SETTINGS = {"learning_rate": (0.0, 100.0), "lr_decay": (0.0, 1.0), "tol": (0.0, 1e6)}
_CHOICE_SETTINGS = {"method": ("svi", "nuts"), "guide": ("block", "normal", "lowrank")}


def check_settings(settings: dict, where: str = "HybridBN") -> None:
    """Raise ``ModelError`` naming the first setting that is unknown, of the wrong type or
    outside its bounds (see ``_INT_SETTINGS`` etc.). ``settings`` as ``get_params()`` without
    the graph."""
    known = (set(_INT_SETTINGS) | set(_OPTIONAL_INT_SETTINGS) | set(_FLOAT_SETTINGS)
             | set(_CHOICE_SETTINGS) | {"device", "progress"})
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ModelError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")

    def whole(name, value, low, high):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ModelError(f"{where}: {name} must be a whole number (got {value!r})")
        if not low <= int(value) <= high:
            raise ModelError(f"{where}: {name}={value!r} is outside [{low}, {high}]; use a value in range")

    for name, (low, high) in _INT_SETTINGS.items():
        if name in settings:
            whole(name, settings[name], low, high)
    for name, (low, high) in _OPTIONAL_INT_SETTINGS.items():
        if settings.get(name) is not None:
            whole(name, settings[name], low, high)
    for name, (low, high) in _FLOAT_SETTINGS.items():
        if name not in settings:
            continue
        value = settings[name]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ModelError(f"{where}: {name} must be a number (got {value!r})")
        if not (np.isfinite(value) and low <= value <= high) or (name != "tol" and value <= 0):
            raise ModelError(f"{where}: {name}={value!r} must be finite, positive and at most {high}")
    for name, choices in _CHOICE_SETTINGS.items():
        if name in settings and settings[name] not in choices:
            raise ModelError(f"{where}: {name} must be one of {list(choices)} (got {settings[name]!r})")
    if "progress" in settings and not isinstance(settings["progress"], (bool, np.bool_)):
        raise ModelError(f"{where}: progress must be true or false (got {settings['progress']!r})")
    if "device" in settings:
        device = settings["device"]
        ok = isinstance(device, str) and (device in ("auto", "cpu", "cuda", "mps")
                                          or (device.startswith("cuda:") and device[5:].isdigit()))
        if not ok:
            raise ModelError(f"{where}: device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' "
                             f"(got {device!r})")


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
        aside = path.with_name(f".{path.name}.old")
        if aside.is_dir():  # a save killed between its two renames
            raise MissingFileError(f"model directory {str(path)!r} does not exist, but {str(aside)!r} "
                                   "(moved aside by a save that was killed) does: rename it back to "
                                   f"{path.name!r} to use it")
        raise MissingFileError(f"model directory {str(path)!r} does not exist")
    for name in _FILES:
        if not (path / name).is_file():
            raise ModelFileError(f"model {str(path)!r} is incomplete: {name} is missing; "
                                 "save the model again")
    try:
        meta = json.loads((path / "meta.json").read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path / 'meta.json'} is not valid JSON ({exc}); the file was "
                             "damaged or edited") from exc
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path / 'meta.json'} holds a JSON {type(meta).__name__}, not the "
                             "object bayesrad writes; the file was damaged or edited: save the model again")
    if meta.get("format") != MODEL_FORMAT or meta.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} is format {meta.get('format')!r} version {meta.get('format_version')!r};"
            f" this bayesrad reads {MODEL_FORMAT!r} version {MODEL_FORMAT_VERSION}: refit and save "
            "the model with this version")
    hashes = meta.get("sha256")
    if not isinstance(hashes, dict):
        raise ModelFileError(f"{path / 'meta.json'} lacks the file hashes; the file was edited")
    for name, digest in hashes.items():
        if name not in ("graph.yaml", "params.safetensors") or _sha256(path / name) != digest:
            raise ModelFileError(f"{path / name} does not match the hash recorded in meta.json: "
                                 "the file was modified after saving; do not load it")
    if set(hashes) != {"graph.yaml", "params.safetensors"}:
        raise ModelFileError(f"{path / 'meta.json'} lacks the file hashes; the file was edited")
    _check_checksums(path)
    settings = meta.get("settings")
    if not isinstance(settings, dict):
        raise ModelFileError(f"{path / 'meta.json'} has no 'settings' object; save the model again")
    try:
        check_settings(settings, where=str(path / "meta.json"))
    except ModelError as exc:
        raise ModelFileError(str(exc)) from exc
    if meta.get("method") not in ("svi", "nuts") or not isinstance(meta.get("impute"), list):
        raise ModelFileError(f"{path / 'meta.json'}: 'method' must be 'svi' or 'nuts' and 'impute' a "
                             "list; the file was edited: save the model again")
    graph = Graph.from_yaml(path / "graph.yaml")
    model = cls(graph, **settings)
    try:
        tensors = load_file(str(path / "params.safetensors"))
    except SafetensorError as exc:
        raise ModelFileError(f"{path / 'params.safetensors'} cannot be read: {exc}") from exc
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelFileError(f"{path / 'params.safetensors'}: tensor {key!r} holds "
                                 f"{int((~torch.isfinite(value)).sum())} non-finite value(s); the "
                                 "model is damaged (or its fit diverged): refit and save it")
    model.graph_ = graph.copy()
    try:
        model.preprocessor_ = Preprocessor.from_dict(model.graph_, meta.get("preprocessing") or {})
    except ModelError as exc:
        raise ModelFileError(f"{path / 'meta.json'}: {exc}") from exc
    model.layout_ = Layout(model.graph_, model.preprocessor_, {str(n) for n in meta["impute"]})
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
