"""Dynamic PET kinetics: time-activity curves (TACs), their descriptors and kinetic habitats.

For dynamic amino-acid PET (e.g. [18F]FET in glioma) the shape of the TAC separates tumour
grades: aggressive tissue peaks early and washes out (negative late slope), less aggressive
tissue keeps accumulating tracer. This module computes, per ROI and per voxel:

- ``peak_suv`` and ``time_to_peak_s`` (time of the maximum);
- ``early_slope_suv_per_h`` / ``late_slope_suv_per_h``: least-squares slopes over an early and a
  late time window;
- ``suv_<window>``: time-averaged SUV over named frame windows;
- ``auc_suv_min``: area under the TAC (trapezoid), SUV x min.

The same descriptors are computed voxel by voxel as parametric maps (:func:`kinetic_maps`).
Habitats cluster the voxels of a ROI by their curves (standardised per frame, reduced by PCA)
with a Gaussian mixture or k-means, the number of habitats chosen by BIC or silhouette.
Habitats are numbered by their mean curve's late slope, lowest first, so habitat 1 is the most
washing-out (typically the most aggressive) subregion in every patient when the model is
fitted on the pooled voxels of a cohort.

Conventions: a 4D series is an array (t, z, y, x) (SimpleITK's order for a 4D image) or a 4D
SimpleITK image; ``frame_times_s`` are the frames' mid times in seconds since injection.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd
import SimpleITK as sitk
from sklearn.base import BaseEstimator

from bayesrad.data.readers import check_geometry, parse_labels, read_image
from bayesrad.errors import FeatureError, ImageError, NotFittedError

_SECONDS_PER_HOUR = 3600.0
_SECONDS_PER_MINUTE = 60.0


def _who(patient_id: str | None) -> str:
    return f"patient {patient_id!r}: " if patient_id is not None else ""


def _text(value) -> str:
    """An images-table cell as text; None and NaN (empty cells) are ""."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")


def parse_frame_times(frame_times) -> np.ndarray:
    """Frame times (s) from ``"0;60;120"``, a sequence or an array; strictly increasing."""
    if isinstance(frame_times, str):
        try:
            values = [float(p) for p in frame_times.replace(",", ";").split(";") if p.strip()]
        except ValueError as exc:
            raise FeatureError(f"frame times {frame_times!r} are not numbers separated by ';' (seconds)") from exc
    else:
        values = np.asarray(frame_times, dtype=float).ravel().tolist()
    times = np.asarray(values, dtype=float)
    if times.size < 3:
        raise FeatureError(f"a dynamic series needs at least 3 frame times (got {times.size}); check frame_times")
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise FeatureError(f"frame times must be finite and strictly increasing (got {times.tolist()[:8]}...)")
    return times


def frame_mid_times(frame_starts_s, last_frame_end_s: float | None = None) -> np.ndarray:
    """Frame mid times (s) from frame start times (s).

    The images table lists frame *start* times; the last frame ends at ``last_frame_end_s``,
    or, when not given, lasts as long as the frame before it (dynamic protocols end with
    equal late frames).
    """
    starts = parse_frame_times(frame_starts_s)
    end = starts[-1] + (starts[-1] - starts[-2]) if last_frame_end_s is None else float(last_frame_end_s)
    if end <= starts[-1]:
        raise FeatureError(f"last_frame_end_s {end:g} s must be after the last frame start {starts[-1]:g} s")
    return (starts + np.append(starts[1:], end)) / 2.0


def default_windows_s(frame_times_s: np.ndarray) -> dict[str, tuple[float, float]]:
    """Early window: the first third of the acquisition; late window: its second half (s)."""
    start, end = float(frame_times_s[0]), float(frame_times_s[-1])
    span = end - start
    return {"early": (start, start + span / 3.0), "late": (start + span / 2.0, end)}


def _window_mask(frame_times_s: np.ndarray, window: tuple[float, float], name: str, minimum: int) -> np.ndarray:
    low, high = window
    selected = (frame_times_s >= low - 1e-9) & (frame_times_s <= high + 1e-9)
    if selected.sum() < minimum:
        raise FeatureError(
            f"the {name} window {low:g}-{high:g} s holds {int(selected.sum())} frame(s) of "
            f"{frame_times_s.tolist()}; it needs at least {minimum}: widen the window"
        )
    return selected


def tac_features(
    curves_suv: np.ndarray,
    frame_times_s,
    *,
    early_window_s: tuple[float, float] | None = None,
    late_window_s: tuple[float, float] | None = None,
    suv_windows_s: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, np.ndarray]:
    """Descriptors of time-activity curves, vectorised over curves.

    ``curves_suv``: array (..., T) of SUV, one curve per leading index (a single ROI curve
    is shape (T,)); ``frame_times_s``: (T,) frame mid times (s). Windows are (start, end) in
    s, ends included; ``None`` uses :func:`default_windows_s`. ``suv_windows_s`` defaults to
    the early and late windows. Returns ``{feature: array (...)}`` with keys
    ``peak_suv``, ``time_to_peak_s``, ``early_slope_suv_per_h``, ``late_slope_suv_per_h``,
    ``auc_suv_min`` and ``suv_<window>`` (time-averaged SUV in each window).
    """
    times = parse_frame_times(frame_times_s)
    curves = np.asarray(curves_suv, dtype=float)
    if curves.shape[-1] != times.size:
        raise FeatureError(f"curves have {curves.shape[-1]} frames but {times.size} frame times were given")
    defaults = default_windows_s(times)
    early = defaults["early"] if early_window_s is None else tuple(early_window_s)
    late = defaults["late"] if late_window_s is None else tuple(late_window_s)
    windows = {"early": early, "late": late} if suv_windows_s is None else dict(suv_windows_s)

    features = {
        "peak_suv": curves.max(axis=-1),
        "time_to_peak_s": times[np.argmax(curves, axis=-1)],
        "early_slope_suv_per_h": _slope(curves, times, _window_mask(times, early, "early", 2)) * _SECONDS_PER_HOUR,
        "late_slope_suv_per_h": _slope(curves, times, _window_mask(times, late, "late", 2)) * _SECONDS_PER_HOUR,
        "auc_suv_min": np.trapezoid(curves, times, axis=-1) / _SECONDS_PER_MINUTE,
    }
    for name, window in windows.items():
        selected = _window_mask(times, tuple(window), f"SUV {name!r}", 1)
        features[f"suv_{_snake(name)}"] = _time_average(curves[..., selected], times[selected])
    return features


def _slope(curves: np.ndarray, times: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """Least-squares slope (SUV/s) of each curve over the selected frames."""
    t = times[selected]
    centred_t = t - t.mean()
    y = curves[..., selected]
    return ((y - y.mean(axis=-1, keepdims=True)) * centred_t).sum(axis=-1) / np.sum(centred_t**2)


def _time_average(curves: np.ndarray, times: np.ndarray) -> np.ndarray:
    if times.size == 1:
        return curves[..., 0]
    return np.trapezoid(curves, times, axis=-1) / (times[-1] - times[0])


def _as_series(pet, patient_id) -> tuple[np.ndarray, sitk.Image | None]:
    """(t, z, y, x) float array and the 4D image it came from (None for arrays)."""
    if isinstance(pet, sitk.Image):
        if pet.GetDimension() != 4:
            raise ImageError(f"{_who(patient_id)}a dynamic PET must be a 4D image (got {pet.GetDimension()}D)")
        array = sitk.GetArrayFromImage(pet).astype(np.float64)
        image = pet
    else:
        array = np.asarray(pet, dtype=np.float64)
        image = None
        if array.ndim != 4:
            raise ImageError(f"{_who(patient_id)}a dynamic PET array must be (t, z, y, x) (got shape {array.shape})")
    return array, image


def _roi_mask(mask, shape_zyx, patient_id, pet_image: sitk.Image | None) -> np.ndarray:
    if isinstance(mask, sitk.Image):
        if pet_image is not None:
            check_geometry(pet_image, mask, patient_id=patient_id, names=("dynamic PET", "mask"))
        mask = sitk.GetArrayViewFromImage(mask)
    inside = np.asarray(mask) != 0
    if inside.shape != tuple(shape_zyx):
        raise ImageError(
            f"{_who(patient_id)}mask shape {inside.shape} differs from the PET frame shape {tuple(shape_zyx)}; "
            "resample the mask onto the PET grid"
        )
    if not inside.any():
        raise ImageError(f"{_who(patient_id)}the ROI mask is empty; check the segmentation")
    return inside


def voxel_curves(pet, mask, *, patient_id: str | None = None) -> np.ndarray:
    """TACs of the voxels inside ``mask``: array (n_voxels, T) in the units of ``pet`` (SUV).

    ``pet``: 4D SimpleITK image or (t, z, y, x) array; ``mask``: 3D label image or (z, y, x)
    array (nonzero = inside). Voxels come in C order of (z, y, x). Raises ``ImageError``
    for an empty mask, a shape or geometry mismatch or NaN voxels inside the mask.
    """
    series, image = _as_series(pet, patient_id)
    return _curves_in(series, image, mask, patient_id)


def _curves_in(series: np.ndarray, image: sitk.Image | None, mask, patient_id) -> np.ndarray:
    inside = _roi_mask(mask, series.shape[1:], patient_id, image)
    curves = series[:, inside].T
    if not np.all(np.isfinite(curves)):
        raise ImageError(f"{_who(patient_id)}the dynamic PET has NaN or infinite voxels inside the ROI; fix the reconstruction")
    return curves


def roi_kinetics(
    pet, mask, frame_times_s, *, patient_id: str | None = None, prefix: str = "dpet", roi: str = "roi", **windows
) -> dict[str, float]:
    """Kinetic descriptors of the ROI's mean TAC: ``{"<prefix>_<roi>_<feature>": value}``.

    ``windows`` are those of :func:`tac_features`. Also returns ``..._volume_ml`` (arrays
    carry no spacing: 1 mm^3 voxels are assumed for them).
    """
    series, image = _as_series(pet, patient_id)
    curves = _curves_in(series, image, mask, patient_id)
    return _roi_descriptors(curves, frame_times_s, f"{prefix}_{_snake(roi)}", _voxel_volume_ml(image), windows)


def kinetic_maps(pet, mask, frame_times_s, *, patient_id: str | None = None, **windows) -> dict[str, np.ndarray]:
    """Voxel-wise parametric maps of the :func:`tac_features` descriptors.

    Returns ``{feature: array (z, y, x)}`` with NaN outside ``mask`` (e.g. a time-to-peak
    map in s, a late-slope map in SUV/h), ready to save on the PET grid.
    """
    series, image = _as_series(pet, patient_id)
    inside = _roi_mask(mask, series.shape[1:], patient_id, image)
    features = tac_features(_curves_in(series, None, inside, patient_id), frame_times_s, **windows)
    maps = {}
    for name, values in features.items():
        volume = np.full(series.shape[1:], np.nan)
        volume[inside] = values
        maps[name] = volume
    return maps


def _roi_descriptors(curves, frame_times_s, stem, voxel_volume_ml, windows) -> dict[str, float]:
    features = tac_features(curves.mean(axis=0), frame_times_s, **windows)
    out = {f"{stem}_{name}": float(value) for name, value in features.items()}
    out[f"{stem}_volume_ml"] = float(len(curves) * voxel_volume_ml)
    return out


def _voxel_volume_ml(image: sitk.Image | None) -> float:
    if image is None:
        return 1e-3
    return float(np.prod(image.GetSpacing()[:3])) / 1000.0


class KineticHabitats(BaseEstimator):
    """Cluster voxel TACs into kinetic habitats (Gaussian mixture or k-means).

    Parameters
    ----------
    n_habitats : fixed number of habitats; ``None`` chooses it in ``k_range`` by ``criterion``.
    k_range : (min, max) number of habitats tried.
    method : ``"kmeans"`` or ``"gmm"`` (sklearn GaussianMixture, full covariance).
    criterion : ``"silhouette"`` (highest wins) or ``"bic"`` (GMM only, lowest wins). The
        default k-means + silhouette is the conservative choice: partial-volume voxels at
        habitat borders form a continuum that BIC tends to split into extra components.
    n_components : PCA components of the per-frame standardised curves that are clustered
        (noise lives in the later components).
    normalize : ``"mean"`` divides each curve by its own time average before clustering, so
        habitats are defined by curve shape (early peak and washout versus accumulation)
        rather than by uptake level, which varies between patients and scanners; ``None``
        clusters the curves as they are.
    max_voxels : voxels subsampled to fit (all are labelled by ``predict``).
    random_state : seed of subsampling, PCA and clustering.

    Attributes (after ``fit``)
    --------------------------
    n_habitats_ : chosen number of habitats.
    criterion_scores_ : ``{k: score}`` for each k tried.
    mean_curves_ : array (n_habitats_, T), mean TAC of each habitat over the fit voxels, in
        habitat order (a NaN row for a mixture component no fit voxel fell into).
    frame_mean_, frame_scale_ : per-frame standardisation.
    pca_, model_ : the fitted sklearn PCA and clustering model.
    order_ : the clustering model's component index of habitat 1, 2, ...
    """

    def __init__(
        self,
        n_habitats: int | None = None,
        k_range: tuple[int, int] = (2, 5),
        method: str = "kmeans",
        criterion: str = "silhouette",
        n_components: int = 3,
        normalize: str | None = "mean",
        max_voxels: int = 20000,
        random_state: int = 0,
    ):
        self.n_habitats = n_habitats
        self.k_range = k_range
        self.method = method
        self.criterion = criterion
        self.n_components = n_components
        self.normalize = normalize
        self.max_voxels = max_voxels
        self.random_state = random_state

    def fit(self, curves, frame_times_s=None) -> "KineticHabitats":
        """Fit on voxel curves: array (n_voxels, T) or a list of such arrays (pooled patients).

        ``frame_times_s`` (T,) orders the habitats by late slope on the true time axis
        (frame index otherwise).
        """
        from sklearn.decomposition import PCA

        if self.method not in ("gmm", "kmeans"):
            raise FeatureError(f"method must be 'gmm' or 'kmeans' (got {self.method!r})")
        if self.criterion not in ("bic", "silhouette"):
            raise FeatureError(f"criterion must be 'bic' or 'silhouette' (got {self.criterion!r})")
        if self.normalize not in ("mean", None):
            raise FeatureError(f"normalize must be 'mean' or None (got {self.normalize!r})")
        if self.criterion == "bic" and self.method != "gmm":
            raise FeatureError("criterion 'bic' needs method 'gmm'; use criterion 'silhouette' with k-means")
        data = np.vstack(curves) if isinstance(curves, (list, tuple)) else np.asarray(curves, dtype=float)
        if data.ndim != 2 or not np.all(np.isfinite(data)):
            raise FeatureError("habitat curves must be a finite array (n_voxels, n_frames)")
        rng = np.random.default_rng(self.random_state)
        if len(data) > self.max_voxels:
            data = data[np.sort(rng.choice(len(data), self.max_voxels, replace=False))]
        k_values = [self.n_habitats] if self.n_habitats is not None else list(range(self.k_range[0], self.k_range[1] + 1))
        if min(k_values) < 1 or max(k_values) >= len(data):
            raise FeatureError(f"numbers of habitats {k_values} must be between 1 and the number of voxels ({len(data)})")

        shapes = self._shapes(data)
        self.frame_mean_ = shapes.mean(axis=0)
        self.frame_scale_ = shapes.std(axis=0)
        self.frame_scale_[self.frame_scale_ == 0] = 1.0
        n_components = min(self.n_components, data.shape[1], len(data) - 1)
        self.pca_ = PCA(n_components=n_components, random_state=self.random_state)
        reduced = self.pca_.fit_transform((shapes - self.frame_mean_) / self.frame_scale_)

        self.criterion_scores_ = {}
        best_model, best_score = None, None
        for k in k_values:
            model = self._model(k).fit(reduced)
            score = self._score(model, reduced, rng) if len(k_values) > 1 else np.nan
            self.criterion_scores_[k] = float(score)
            better = best_model is None or (score < best_score if self.criterion == "bic" else score > best_score)
            if better:
                best_model, best_score = model, score
        raw_labels = best_model.predict(reduced)
        n_clusters = _n_clusters(best_model)
        means = np.array(
            [data[raw_labels == c].mean(axis=0) if np.any(raw_labels == c) else np.full(data.shape[1], np.nan) for c in range(n_clusters)]
        )
        times = np.arange(data.shape[1], dtype=float) if frame_times_s is None else parse_frame_times(frame_times_s)
        late = default_windows_s(times)["late"]
        late_slope = _slope(np.nan_to_num(means), times, _window_mask(times, late, "late", 2))
        # A mixture component no fit voxel fell into (possible with a GMM) sorts last.
        late_slope[np.isnan(means).any(axis=1)] = np.inf
        self.order_ = np.argsort(late_slope, kind="stable")
        self.model_ = best_model
        self.n_habitats_ = n_clusters
        self.mean_curves_ = means[self.order_]
        return self

    def predict(self, curves: np.ndarray) -> np.ndarray:
        """Habitat of each curve: int array (n_voxels,), values 1..n_habitats_."""
        if not hasattr(self, "model_"):
            raise NotFittedError("KineticHabitats.predict was called before fit; call fit(curves) first")
        data = np.asarray(curves, dtype=float)
        if data.ndim != 2 or data.shape[1] != len(self.frame_mean_):
            raise FeatureError(f"curves must be (n_voxels, {len(self.frame_mean_)}) like in fit (got {data.shape})")
        raw = self.model_.predict(self.pca_.transform((self._shapes(data) - self.frame_mean_) / self.frame_scale_))
        rank = np.empty_like(self.order_)
        rank[self.order_] = np.arange(len(self.order_))
        return rank[raw] + 1

    def _shapes(self, curves: np.ndarray) -> np.ndarray:
        if self.normalize is None:
            return curves
        level = np.abs(curves).mean(axis=1, keepdims=True)
        # A curve that is zero throughout has no shape; leave it at zero.
        return np.divide(curves, level, out=np.zeros_like(curves), where=level > 0)

    def _model(self, k: int):
        from sklearn.cluster import KMeans
        from sklearn.mixture import GaussianMixture

        if self.method == "gmm":
            return GaussianMixture(n_components=k, covariance_type="full", n_init=2, random_state=self.random_state)
        return KMeans(n_clusters=k, n_init=4, random_state=self.random_state)

    def _score(self, model, reduced: np.ndarray, rng: np.random.Generator) -> float:
        from sklearn.metrics import silhouette_score

        if self.criterion == "bic":
            return float(model.bic(reduced))
        labels = model.predict(reduced)
        if len(np.unique(labels)) < 2:
            return -1.0
        # Silhouette is quadratic in the number of points: score on a subsample.
        size = min(len(reduced), 3000)
        index = rng.choice(len(reduced), size, replace=False)
        return float(silhouette_score(reduced[index], labels[index]))


def _n_clusters(model) -> int:
    """Number of clusters of a fitted GaussianMixture or KMeans."""
    return int(getattr(model, "n_components", getattr(model, "n_clusters", 0)))


def habitat_map(pet, mask, habitats: KineticHabitats, *, patient_id: str | None = None) -> np.ndarray:
    """Habitat label of every voxel: int array (z, y, x), 0 outside the mask, 1.. inside."""
    series, image = _as_series(pet, patient_id)
    return _labelled(series, image, mask, habitats, patient_id)[0]


def _labelled(series, image, mask, habitats: KineticHabitats, patient_id):
    """(habitat map (z, y, x), ROI curves (n, T), their labels (n,)) of one series."""
    inside = _roi_mask(mask, series.shape[1:], patient_id, image)
    curves = _curves_in(series, None, inside, patient_id)
    voxel_labels = habitats.predict(curves)
    labels = np.zeros(series.shape[1:], dtype=np.int16)
    labels[inside] = voxel_labels
    return labels, curves, voxel_labels


def habitat_features(
    pet,
    mask,
    frame_times_s,
    habitats: KineticHabitats,
    *,
    patient_id: str | None = None,
    prefix: str = "dpet",
    roi: str = "roi",
    **windows,
) -> tuple[dict[str, float], np.ndarray]:
    """Per-patient habitat features and the habitat map.

    Returns ``(features, labels)``: ``features`` has, for each habitat ``h`` of the fitted
    model, ``<prefix>_<roi>_habitat<h>_fraction`` (share of ROI voxels) and the descriptors
    of :func:`tac_features` of the habitat's mean TAC (NaN when the patient has no voxel in
    that habitat); ``labels`` is the (z, y, x) habitat map of :func:`habitat_map`.
    """
    series, image = _as_series(pet, patient_id)
    labels, curves, voxel_labels = _labelled(series, image, mask, habitats, patient_id)
    features = _habitat_descriptors(
        curves, voxel_labels, habitats.n_habitats_, frame_times_s, f"{prefix}_{_snake(roi)}", windows
    )
    return features, labels


def _habitat_descriptors(curves, voxel_labels, n_habitats, frame_times_s, stem, windows) -> dict[str, float]:
    """Volume fraction and mean-TAC descriptors of each habitat (NaN descriptors when empty)."""
    features: dict[str, float] = {}
    names = list(tac_features(curves[0], frame_times_s, **windows))
    for h in range(1, n_habitats + 1):
        in_habitat = voxel_labels == h
        features[f"{stem}_habitat{h}_fraction"] = float(in_habitat.mean())
        if in_habitat.any():
            descriptors = tac_features(curves[in_habitat].mean(axis=0), frame_times_s, **windows)
            features.update({f"{stem}_habitat{h}_{k}": float(v) for k, v in descriptors.items()})
        else:
            features.update({f"{stem}_habitat{h}_{k}": float("nan") for k in names})
    return features


def save_habitat_map(labels: np.ndarray, reference, path: str | os.PathLike) -> str:
    """Write a (z, y, x) habitat map as NIfTI on the spatial grid of ``reference``.

    ``reference``: the PET (3D or 4D SimpleITK image); for a 4D series its first three axes
    give spacing, origin and direction. The file is written atomically (temp file + rename).
    Returns the path written.
    """
    labels = np.asarray(labels)
    if reference.GetDimension() == 4:
        size = reference.GetSize()[:3]
        spacing, origin = reference.GetSpacing()[:3], reference.GetOrigin()[:3]
        direction = np.asarray(reference.GetDirection()).reshape(4, 4)[:3, :3].ravel()
    else:
        size, spacing, origin = reference.GetSize(), reference.GetSpacing(), reference.GetOrigin()
        direction = np.asarray(reference.GetDirection())
    if tuple(labels.shape[::-1]) != tuple(size):
        raise ImageError(f"habitat map shape {labels.shape} (z, y, x) does not match the PET grid {tuple(size)} (x, y, z)")
    image = sitk.GetImageFromArray(labels.astype(np.uint8))
    image.SetSpacing(tuple(spacing))
    image.SetOrigin(tuple(origin))
    image.SetDirection(tuple(float(d) for d in direction))
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    sitk.WriteImage(image, temporary)
    os.replace(temporary, path)
    return path


def _load_dynamic(row, patient_id: str, last_frame_end_s, modality: str):
    """(4D PET, 3D binary mask image on its grid, frame mid times (s), ROI name) of an images row."""
    units = _text(row.get("units"))
    if units and units.upper() != "SUV":
        raise FeatureError(
            f"{_who(patient_id)}the {modality} image is in {units!r}, not SUV; the kinetic features are in SUV: "
            "convert the series to SUV (activity / (injected dose / body weight)) first"
        )
    pet = read_image(row["path"], patient_id)
    if pet.GetDimension() != 4:
        raise ImageError(f"{_who(patient_id)}the {modality} image {row['path']!r} is {pet.GetDimension()}D; a dynamic PET must be 4D")
    if not _text(row.get("mask_path")):
        raise FeatureError(f"{_who(patient_id)}the {modality} image has no mask_path; add the tumour mask to the manifest")
    label_image = read_image(row["mask_path"], patient_id)
    wanted = parse_labels(row.get("mask_labels"))
    values = sitk.GetArrayViewFromImage(label_image)
    mask = (values != 0) if wanted is None else np.isin(values, wanted)
    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_image.CopyInformation(label_image)
    try:
        times = frame_mid_times(_text(row.get("frame_times")), last_frame_end_s)
    except FeatureError as exc:
        raise FeatureError(f"{_who(patient_id)}{exc}; fix frame_times in the manifest") from exc
    if pet.GetSize()[3] != times.size:
        raise FeatureError(
            f"{_who(patient_id)}the dynamic PET has {pet.GetSize()[3]} frames but frame_times lists {times.size}; fix the manifest"
        )
    roi = _text(row.get("roi")) or "tumour"
    return pet, mask_image, times, roi


def _dynamic_row(rows: pd.DataFrame, patient_id, modality: str) -> pd.Series:
    selected = rows[rows["modality"].astype(str).str.upper() == modality.upper()]
    if selected.empty:
        raise FeatureError(f"{_who(patient_id)}no {modality!r} image in the images table; add the dynamic PET with modality {modality!r}")
    return selected.iloc[0]


def patient_kinetics(
    rows: pd.DataFrame,
    patient_id: str | None = None,
    *,
    habitats: KineticHabitats | None = None,
    habitat_path: str | os.PathLike | None = None,
    last_frame_end_s: float | None = None,
    modality: str = "DPET",
    prefix: str = "dpet",
    **windows,
) -> dict[str, float]:
    """Kinetic features of one patient from their rows of ``cohort.images``.

    The ``modality`` row gives the 4D ``path``, ``mask_path``/``mask_labels``, ``roi`` and
    ``frame_times`` (frame start times, s; see :func:`frame_mid_times`). Returns the
    :func:`roi_kinetics` features and, with a fitted ``habitats`` model, the
    :func:`habitat_features` (the map saved to ``habitat_path`` when given).
    """
    patient_id = None if patient_id is None else str(patient_id)
    pet, mask, times, roi = _load_dynamic(_dynamic_row(rows, patient_id, modality), patient_id, last_frame_end_s, modality)
    features = roi_kinetics(pet, mask, times, patient_id=patient_id, prefix=prefix, roi=roi, **windows)
    if habitats is not None:
        values, labels = habitat_features(pet, mask, times, habitats, patient_id=patient_id, prefix=prefix, roi=roi, **windows)
        features.update(values)
        if habitat_path is not None:
            save_habitat_map(labels, pet, habitat_path)
    return features


def extract_kinetics(
    cohort,
    *,
    habitats: KineticHabitats | None = None,
    habitat_dir: str | os.PathLike | None = None,
    last_frame_end_s: float | None = None,
    modality: str = "DPET",
    prefix: str = "dpet",
    **windows,
) -> pd.DataFrame:
    """The kinetics block of a cohort: ROI and habitat features per patient with a dynamic PET.

    Reads each ``modality`` row of ``cohort.images`` (see :func:`patient_kinetics`).
    ``habitats``: a fitted :class:`KineticHabitats` to apply, an unfitted one to fit on the
    pooled ROI voxels of the cohort, or ``None`` (a default one, fitted on the cohort), so
    that habitat ``h`` means the same kinetics in every patient. ``habitat_dir``: when given,
    each patient's habitat map is saved there as ``<patient_id>_habitats.nii.gz``. Only ROI
    curves are kept in memory between the two passes, never whole 4D series. Returns a
    DataFrame indexed by ``patient_id``; the habitat model is in ``result.attrs["habitats"]``.
    """
    images = getattr(cohort, "images", None)
    if images is None or len(images) == 0:
        raise FeatureError("the cohort has no images table; build it with images (a manifest) to extract kinetics")
    rows = images[images["modality"].astype(str).str.upper() == modality.upper()]
    if rows.empty:
        raise FeatureError(f"no {modality!r} image in the cohort's images table; dynamic PET rows need modality {modality!r}")

    patients, table = [], {}
    reference_times, reference_patient = None, None
    for _, row in rows.iterrows():
        patient_id = str(row["patient_id"])
        pet, mask, times, roi = _load_dynamic(row, patient_id, last_frame_end_s, modality)
        if reference_times is None:
            reference_times, reference_patient = times, patient_id
        elif times.size != reference_times.size or not np.allclose(times, reference_times):
            raise FeatureError(
                f"{_who(patient_id)}frame times differ from those of patient {reference_patient!r}; "
                "habitats pooled over a cohort need one frame protocol (resample the TACs first)"
            )
        curves = voxel_curves(pet, mask, patient_id=patient_id)
        table[patient_id] = _roi_descriptors(curves, times, f"{prefix}_{_snake(roi)}", _voxel_volume_ml(pet), windows)
        patients.append((patient_id, curves, sitk.GetArrayFromImage(mask) != 0, mask, roi))

    model = habitats if habitats is not None else KineticHabitats()
    if not hasattr(model, "model_"):
        model.fit([curves for _, curves, _, _, _ in patients], reference_times)
    for patient_id, curves, inside, mask, roi in patients:
        voxel_labels = model.predict(curves)
        stem = f"{prefix}_{_snake(roi)}"
        table[patient_id].update(_habitat_descriptors(curves, voxel_labels, model.n_habitats_, reference_times, stem, windows))
        if habitat_dir is not None:
            labels = np.zeros(inside.shape, dtype=np.int16)
            labels[inside] = voxel_labels
            save_habitat_map(labels, mask, os.path.join(os.fspath(habitat_dir), f"{patient_id}_habitats.nii.gz"))
    result = pd.DataFrame.from_dict(table, orient="index")
    result.index.name = "patient_id"
    result.attrs["habitats"] = model
    return result


__all__ = [
    "parse_frame_times",
    "frame_mid_times",
    "default_windows_s",
    "tac_features",
    "voxel_curves",
    "roi_kinetics",
    "kinetic_maps",
    "KineticHabitats",
    "habitat_map",
    "habitat_features",
    "save_habitat_map",
    "patient_kinetics",
    "extract_kinetics",
]
