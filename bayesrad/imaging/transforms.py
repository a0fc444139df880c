"""MONAI preprocessing of a patient's images into one fixed-size multi-channel volume.

A patient's images (e.g. CT + PET, three CT phases, MR sequences) are read with SimpleITK
(``bayesrad.data.readers``), turned into MONAI ``MetaTensor`` objects that carry their affine,
and run through a list of dictionary transforms. A dynamic (4D) series first becomes one 3D
image: its last frame, or the duration-weighted mean of the frames in ``dynamic_window_s``
(``dynamic_summary``), so early and late uptake can be stacked as two channels (DPET + PET).

1. ``Orientationd``: RAS orientation.
2. ``ResampleToMatchd``: every other channel and the mask onto the reference (first) channel.
3. ``CropAroundMaskd``: a generous crop around the mask (so that resampling stays cheap), then
   ``Spacingd``: isotropic resampling to ``spacing_mm``.
4. Per-modality intensity: CT clipped to a HU window and scaled to [0, 1]; PET (SUV) divided by
   ``suv_max`` and clipped to [0, 1]; MR z-scored within the body; dose divided by
   ``dose_max_gy``; anything else z-scored over the volume.
5. ``CropForegroundd`` around the mask with a margin, then ``ResizeWithPadOrCropd`` to a fixed
   cube of ``size`` voxels (no rescaling: a voxel stays ``spacing_mm`` wide, so tumour size is
   preserved in the embedding).
6. ``ConcatItemsd``: channel stacking in the order of ``modalities``.
7. Optional augmentation that stays physically plausible: left-right flip, rotations of at
   most ``max_rotation_deg``, intensity scale/shift jitter of a few percent.

Geometry travels with the data (MetaTensor affine), so a heatmap made in the preprocessed space
can be resampled back onto the original image grid (``bayesrad.imaging.saliency``).
Arrays inside MONAI are channel-first ``(C, x, y, z)``; SimpleITK arrays are ``(z, y, x)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    ConcatItemsd,
    CropForegroundd,
    DeleteItemsd,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandFlipd,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ResampleToMatchd,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    SpatialCrop,
    Spacingd,
)

from bayesrad.data.readers import parse_labels, read_image, read_mask
from bayesrad.errors import FeatureError, ImageError
from bayesrad.features.kinetics import parse_frame_times

MASK_KEY = "mask"
IMAGE_KEY = "image"
# ITK stores physical points in LPS; MONAI/NIfTI affines are RAS: flip the first two axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings of the preprocessing pipeline (all written into the model card).

    modalities : channel order, names as in ``cohort.images['modality']`` (e.g. ``("CT", "PET")``).
    spacing_mm : isotropic voxel size after resampling (mm).
    size : voxels per side of the output cube (output shape ``(len(modalities), size, size, size)``).
    margin_mm : margin around the mask's bounding box before the fixed-size crop (mm).
    ct_window_hu : (low, high) HU window mapped to [0, 1].
    suv_max : SUV mapped to 1 (values above are clipped).
    dose_max_gy : dose mapped to 1 (Gy).
    roi : which ``roi`` rows of the images table to use (None: the first row per modality).
    dynamic_window_s : (start, end) seconds after injection. A dynamic (4D) series enters as the
        duration-weighted mean of its frames whose mid time lies in this window (the images
        table's ``frame_times`` give the frame starts), e.g. ``(300, 900)``, the 5-15 min
        "early" sum of FET PET where aggressive glioma peaks. None: its last frame (late uptake).
    """

    modalities: tuple[str, ...] = ("CT",)
    spacing_mm: float = 2.0
    size: int = 32
    margin_mm: float = 10.0
    ct_window_hu: tuple[float, float] = (-200.0, 250.0)
    suv_max: float = 10.0
    dose_max_gy: float = 80.0
    roi: str | None = None
    dynamic_window_s: tuple[float, float] | None = None

    def __post_init__(self):
        object.__setattr__(self, "modalities", tuple(str(m) for m in self.modalities))
        object.__setattr__(self, "ct_window_hu", tuple(float(v) for v in self.ct_window_hu))
        if not self.modalities:
            raise ImageError("PreprocessConfig.modalities is empty; name at least one image modality, e.g. ('CT',)")
        if len(set(self.modalities)) != len(self.modalities):
            raise ImageError(f"PreprocessConfig.modalities {self.modalities} repeats a modality; list each once")
        if self.spacing_mm <= 0 or self.size < 8 or self.margin_mm < 0:
            raise ImageError(
                f"PreprocessConfig: spacing_mm={self.spacing_mm} must be > 0, size={self.size} >= 8 voxels, "
                f"margin_mm={self.margin_mm} >= 0"
            )
        if self.ct_window_hu[1] <= self.ct_window_hu[0]:
            raise ImageError(f"PreprocessConfig.ct_window_hu {self.ct_window_hu} must be (low, high) with low < high")
        if self.dynamic_window_s is not None:
            window = tuple(float(v) for v in self.dynamic_window_s)
            if len(window) != 2 or not 0.0 <= window[0] < window[1]:
                raise ImageError(f"PreprocessConfig.dynamic_window_s {self.dynamic_window_s} must be (start, end) s "
                                 f"with 0 <= start < end")
            object.__setattr__(self, "dynamic_window_s", window)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        d["ct_window_hu"] = list(self.ct_window_hu)
        d["dynamic_window_s"] = None if self.dynamic_window_s is None else list(self.dynamic_window_s)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        window = d.get("dynamic_window_s")
        return cls(**{**d, "modalities": tuple(d["modalities"]), "ct_window_hu": tuple(d["ct_window_hu"]),
                      "dynamic_window_s": None if window is None else tuple(window)})


def modality_family(modality: str) -> str:
    """``'CT_arterial'`` -> ``'CT'``; ``'MR_T1'`` -> ``'MR'``; PET/DPET -> ``'PET'``; DOSE -> ``'DOSE'``."""
    head = modality.upper().split("_")[0]
    if head in ("PET", "DPET", "PT"):
        return "PET"
    if head in ("MR", "MRI", "T1", "T2", "FLAIR"):
        return "MR"
    if head in ("CT", "DOSE"):
        return head
    return "OTHER"


def sitk_to_metatensor(image: sitk.Image) -> MetaTensor:
    """A 3D SimpleITK image as a channel-first MetaTensor ``(1, x, y, z)`` with its RAS affine."""
    if image.GetDimension() != 3:
        raise ImageError(f"expected a 3D image, got {image.GetDimension()}D; pass one frame of a 4D series")
    array = sitk.GetArrayFromImage(image).astype(np.float32).transpose(2, 1, 0)
    affine = np.eye(4)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing())[None, :]
    affine[:3, 3] = image.GetOrigin()
    affine = _LPS_TO_RAS @ affine
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None], affine=torch.as_tensor(affine))


def metatensor_to_sitk(volume: torch.Tensor, affine) -> sitk.Image:
    """Inverse of ``sitk_to_metatensor`` for a single-channel volume ``(x, y, z)`` or ``(1, x, y, z)``."""
    array = np.asarray(volume.detach().cpu() if isinstance(volume, torch.Tensor) else volume, dtype=np.float32)
    if array.ndim == 4:
        array = array[0]
    lps = _LPS_TO_RAS @ np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (lps[:3, :3] / spacing[None, :]).ravel()))
    return image


class ZScoreWithinBodyd(MapTransform):
    """Z-score MR intensities using only voxels inside the body.

    The body is the set of voxels above ``body_fraction`` x the 99th percentile: MR background is
    near zero but not exactly zero, so MONAI's ``nonzero=True`` would count noise as body.
    """

    def __init__(self, keys, body_fraction: float = 0.05, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.body_fraction = body_fraction

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            body = x > self.body_fraction * torch.quantile(x.flatten().float()[:: max(1, x.numel() // 200_000)], 0.99)
            values = x[body] if body.any() else x.flatten()
            d[key] = (x - values.mean()) / values.std().clamp_min(1e-6)
        return d


class CropAroundMaskd(MapTransform):
    """Crop every key to the mask's bounding box grown by ``margin_mm`` on each side.

    Runs before resampling so that ``Spacingd`` only interpolates the tumour region (a
    whole-body grid upsampled to 2 mm would cost seconds per patient). The margin is converted
    to voxels per axis from the MetaTensor affine, so anisotropic grids (3 mm slices) are
    handled. An empty mask leaves the data uncropped.
    """

    def __init__(self, keys, source_key: str, margin_mm: float, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.source_key = source_key
        self.margin_mm = margin_mm

    def __call__(self, data):
        d = dict(data)
        mask = d[self.source_key]
        nonzero = torch.nonzero(mask[0] > 0.5)
        if len(nonzero) == 0:
            return d
        spacing = np.linalg.norm(np.asarray(mask.affine, dtype=float)[:3, :3], axis=0)
        grow = np.ceil(self.margin_mm / spacing).astype(int) + 1
        start = np.maximum(nonzero.min(0).values.numpy() - grow, 0)
        end = np.minimum(nonzero.max(0).values.numpy() + 1 + grow, np.asarray(mask.shape[1:]))
        crop = SpatialCrop(roi_start=start.tolist(), roi_end=end.tolist())
        for key in self.key_iterator(d):
            d[key] = crop(d[key])
        return d


def _intensity_transforms(config: PreprocessConfig) -> list:
    out = []
    for modality in config.modalities:
        family = modality_family(modality)
        if family == "CT":
            lo, hi = config.ct_window_hu
            out.append(ScaleIntensityRanged(modality, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
        elif family == "PET":
            out.append(ScaleIntensityRanged(modality, a_min=0.0, a_max=config.suv_max, b_min=0.0, b_max=1.0, clip=True))
        elif family == "DOSE":
            out.append(ScaleIntensityRanged(modality, a_min=0.0, a_max=config.dose_max_gy, b_min=0.0, b_max=1.0, clip=True))
        elif family == "MR":
            out.append(ZScoreWithinBodyd(modality))
        else:
            out.append(NormalizeIntensityd(modality))
    return out


def augmentation_transforms(max_rotation_deg: float = 10.0, intensity_jitter: float = 0.05, prob: float = 0.5) -> list:
    """Physically plausible augmentation of the stacked ``image`` (and ``mask``).

    Left-right flip only (anatomy is roughly symmetric left-right, not head-feet or
    front-back); rotations up to ``max_rotation_deg`` degrees about each axis; intensity scaled
    and shifted by at most ``intensity_jitter`` (fraction).
    """
    angle = float(np.deg2rad(max_rotation_deg))
    return [
        RandFlipd([IMAGE_KEY, MASK_KEY], prob=prob, spatial_axis=0),
        RandRotated([IMAGE_KEY, MASK_KEY], range_x=angle, range_y=angle, range_z=angle, prob=prob,
                    mode=("bilinear", "nearest"), padding_mode="border"),
        RandScaleIntensityd(IMAGE_KEY, factors=intensity_jitter, prob=prob),
        RandShiftIntensityd(IMAGE_KEY, offsets=intensity_jitter, prob=prob),
    ]


def preprocessing_transforms(config: PreprocessConfig, augment: bool = False) -> Compose:
    """The MONAI ``Compose`` taking ``{modality: MetaTensor, 'mask': MetaTensor}`` to
    ``{'image': (C, size, size, size), 'mask': (1, size, size, size)}``."""
    modalities = list(config.modalities)
    keys = modalities + [MASK_KEY]
    reference = modalities[0]
    margin = int(np.ceil(config.margin_mm / config.spacing_mm))
    steps = [
        EnsureTyped(keys, dtype=torch.float32, track_meta=True),
        Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ]
    others = [k for k in keys if k != reference]
    steps.append(ResampleToMatchd(others, key_dst=reference,
                                  mode=["bilinear"] * (len(others) - 1) + ["nearest"], padding_mode="zeros"))
    # the fixed-size cube (size * spacing_mm) must fit inside the pre-crop, whatever the mask size
    steps.append(CropAroundMaskd(keys, MASK_KEY, margin_mm=max(config.margin_mm, config.size * config.spacing_mm / 2)))
    steps.append(Spacingd(keys, pixdim=(config.spacing_mm,) * 3, mode=["bilinear"] * len(modalities) + ["nearest"]))
    steps += _intensity_transforms(config)
    steps += [
        CropForegroundd(keys, source_key=MASK_KEY, margin=margin, allow_smaller=True),
        ResizeWithPadOrCropd(keys, spatial_size=(config.size,) * 3, mode="constant"),
        ConcatItemsd(modalities, name=IMAGE_KEY, dim=0),
        DeleteItemsd(modalities),
    ]
    if augment:
        steps += augmentation_transforms()
    return Compose(steps)


@dataclass
class PatientVolume:
    """One preprocessed patient: ``image`` (C, S, S, S) float32 tensor, ``mask`` (1, S, S, S),
    ``affine`` (4x4 RAS, mm) of the output grid, and the original reference image (SimpleITK)."""

    patient_id: str
    image: torch.Tensor
    mask: torch.Tensor
    affine: np.ndarray
    reference: sitk.Image = field(repr=False)


def _rows_for(images: pd.DataFrame, patient_id: str, config: PreprocessConfig) -> dict[str, pd.Series]:
    rows = images[images["patient_id"] == patient_id]
    if config.roi is not None:
        rows = rows[(rows["roi"] == config.roi) | (rows["roi"] == "")]
    chosen = {}
    for modality in config.modalities:
        hit = rows[rows["modality"] == modality]
        if hit.empty:
            raise ImageError(
                f"patient {patient_id!r} has no {modality!r} image (has: {sorted(rows['modality'].unique())}); "
                f"drop the patient or choose modalities present for every patient"
            )
        chosen[modality] = hit.iloc[0]
    return chosen


def dynamic_summary(image: sitk.Image, frame_times, window_s: tuple[float, float] | None,
                    patient_id: str | None = None) -> sitk.Image:
    """One 3D image from a 4D series (x, y, z, t): its last frame when ``window_s`` is None, else the
    duration-weighted mean of the frames whose mid time lies in ``window_s`` (s).

    ``frame_times`` are the frame start times (s; ``"0;60;180"``), as in the images table; the
    last frame lasts as long as the one before it.
    """
    size = list(image.GetSize())
    if window_s is None:
        return sitk.Extract(image, size[:3] + [0], [0, 0, 0, size[3] - 1])
    text = "" if frame_times is None or (isinstance(frame_times, float) and np.isnan(frame_times)) else str(frame_times)
    if not text.strip():
        raise ImageError(f"patient {patient_id!r}: a dynamic window {window_s} s needs the series' frame_times "
                         f"(frame start times in s) in the images table; add them or set dynamic_window_s=None")
    try:
        starts = parse_frame_times(text)
    except FeatureError as exc:
        raise ImageError(f"patient {patient_id!r}: {exc}") from exc
    if starts.size != size[3]:
        raise ImageError(f"patient {patient_id!r}: frame_times lists {starts.size} frames but the series has "
                         f"{size[3]}; fix the images table")
    durations = np.diff(np.append(starts, 2 * starts[-1] - starts[-2]))
    mids = starts + durations / 2.0
    chosen = np.flatnonzero((mids >= window_s[0]) & (mids <= window_s[1]))
    if chosen.size == 0:
        raise ImageError(f"patient {patient_id!r}: no frame of the dynamic series has its mid time in "
                         f"{window_s} s (mid times {np.round(mids).tolist()}); widen dynamic_window_s")
    frames = sitk.GetArrayFromImage(image)  # (t, z, y, x)
    summary = np.tensordot(durations[chosen] / durations[chosen].sum(), frames[chosen].astype(np.float64), axes=1)
    out = sitk.GetImageFromArray(summary.astype(np.float32))
    out.CopyInformation(sitk.Extract(image, size[:3] + [0], [0, 0, 0, 0]))
    return out


def load_patient(images: pd.DataFrame, patient_id: str, config: PreprocessConfig) -> dict:
    """Read one patient's channels and mask as MetaTensors (the input of ``preprocessing_transforms``).

    The mask is the first channel's mask that exists (``mask_labels`` selects labels); a
    patient without any mask gets an all-ones mask so the crop is centred on the volume.
    Also returns the reference SimpleITK image under ``'reference'``.
    """
    rows = _rows_for(images, patient_id, config)
    data: dict = {}
    mask_image = None
    for modality, row in rows.items():
        image = read_image(row["path"], patient_id)
        if image.GetDimension() == 4:
            image = dynamic_summary(image, row.get("frame_times", ""), config.dynamic_window_s, patient_id)
        if modality == config.modalities[0]:
            data["reference"] = image
        data[modality] = sitk_to_metatensor(image)
        if mask_image is None and str(row.get("mask_path", "")):
            raw = read_mask(row["mask_path"], reference=image, labels=row.get("mask_labels") or None, patient_id=patient_id)
            labels = parse_labels(row.get("mask_labels") or None)
            values = sitk.GetArrayFromImage(raw)
            binary = np.isin(values, labels) if labels else values != 0
            mask_image = sitk.GetImageFromArray(binary.astype(np.float32))
            mask_image.CopyInformation(raw)
    if mask_image is None:
        mask_image = sitk.Image(data["reference"].GetSize(), sitk.sitkFloat32) + 1.0
        mask_image.CopyInformation(data["reference"])
    data[MASK_KEY] = sitk_to_metatensor(mask_image)
    return data


def preprocess_patient(images: pd.DataFrame, patient_id: str, config: PreprocessConfig,
                       augment: bool = False, seed: int | None = None) -> PatientVolume:
    """Load and preprocess one patient; see the module docstring for the steps.

    ``augment`` adds the random augmentation, drawn reproducibly from ``seed``.
    """
    data = load_patient(images, patient_id, config)
    reference = data.pop("reference")
    pipeline = preprocessing_transforms(config, augment)
    if augment and seed is not None:
        pipeline.set_random_state(seed=seed)
    out = pipeline(data)
    image = out[IMAGE_KEY]
    if not torch.isfinite(image.as_tensor()).all():
        raise ImageError(f"patient {patient_id!r}: preprocessing produced NaN/inf voxels; check the image files")
    return PatientVolume(
        patient_id, image.as_tensor().float(), (out[MASK_KEY].as_tensor() > 0.5).float(),
        np.asarray(image.affine, dtype=float), reference,
    )


def preprocess_cohort(cohort, config: PreprocessConfig, patient_ids: Sequence[str] | None = None,
                      skip_missing: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Preprocess every patient that has all ``config.modalities``.

    Parameters
    ----------
    cohort : ``bayesrad.Cohort`` with an ``images`` table.
    config : the ``PreprocessConfig``.
    patient_ids : patients to use (default: every patient with images).
    skip_missing : skip patients lacking a modality (a missing modality is normal in a
        cohort and is marginalised downstream); False raises ``ImageError`` instead.

    Returns
    -------
    images (N, C, S, S, S) float32, masks (N, 1, S, S, S) float32, patient ids (list of N str).
    """
    table = cohort.images
    if table is None or len(table) == 0:
        raise ImageError(f"cohort {cohort.name!r} has no images table; build it with a manifest of image paths")
    ids = list(patient_ids) if patient_ids is not None else list(dict.fromkeys(table["patient_id"]))
    volumes, masks, kept = [], [], []
    for pid in ids:
        have = set(table.loc[table["patient_id"] == pid, "modality"])
        if not set(config.modalities) <= have and skip_missing:
            continue
        vol = preprocess_patient(table, pid, config)
        volumes.append(vol.image)
        masks.append(vol.mask)
        kept.append(pid)
    if not kept:
        raise ImageError(
            f"cohort {cohort.name!r}: no patient has all of {list(config.modalities)} "
            f"(modalities present: {sorted(table['modality'].unique())}); choose other modalities"
        )
    return torch.stack(volumes), torch.stack(masks), kept


__all__ = [
    "PreprocessConfig",
    "PatientVolume",
    "CropAroundMaskd",
    "ZScoreWithinBodyd",
    "augmentation_transforms",
    "dynamic_summary",
    "load_patient",
    "metatensor_to_sitk",
    "modality_family",
    "preprocess_cohort",
    "preprocess_patient",
    "preprocessing_transforms",
    "sitk_to_metatensor",
]
