"""Learned 3D image embeddings: MONAI preprocessing and encoders, self-supervised pretraining by
masked inpainting, supervised fine-tuning on a target, linear probes of embeddings,
attention-MIL for patient-level labels, and saliency maps back to voxels.

Entry points for the command line: ``pretrain_encoder(cohort, out_dir, ...)`` and
``embed_cohort(cohort, encoder_dir, ...) -> deep block``. Nothing is downloaded: encoders are
initialised randomly and trained by the package (a small one ships as package data: ``packaged_encoder("encoder_small")``).
"""

from bayesrad.imaging.embed import embed_cohort, embed_volumes, embedding_frame, packaged_encoder
from bayesrad.imaging.encoders import ENCODERS, EncoderConfig, VolumeEncoder, build_encoder, load_encoder, save_encoder
from bayesrad.imaging.finetune import VolumeRegressor
from bayesrad.imaging.mil import AttentionMILClassifier
from bayesrad.imaging.pretrain import PretrainResult, pretrain_encoder, pretrain_volumes
from bayesrad.imaging.probe import linear_probe_r2
from bayesrad.imaging.saliency import (
    ImagePredictor, gradient_saliency, heatmap_auc, heatmap_to_image, integrated_gradient_saliency,
    integrated_gradients, occlusion_saliency, saliency_map, save_heatmap,
)
from bayesrad.imaging.transforms import PreprocessConfig, preprocess_cohort, preprocess_patient, preprocessing_transforms

__all__ = [
    "ENCODERS", "EncoderConfig", "VolumeEncoder", "build_encoder", "load_encoder", "save_encoder",
    "PreprocessConfig", "preprocess_cohort", "preprocess_patient", "preprocessing_transforms",
    "PretrainResult", "pretrain_encoder", "pretrain_volumes",
    "embed_cohort", "embed_volumes", "embedding_frame", "packaged_encoder",
    "AttentionMILClassifier", "VolumeRegressor", "linear_probe_r2",
    "ImagePredictor", "gradient_saliency", "occlusion_saliency", "integrated_gradients",
    "integrated_gradient_saliency", "saliency_map", "heatmap_auc", "heatmap_to_image", "save_heatmap",
]
