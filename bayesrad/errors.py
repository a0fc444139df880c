"""Every error bayesrad raises on bad input.

One hierarchy in one place, so that a caller can catch ``BayesradError`` and a
message always names the culprit (patient, column, file or node) and the fix.
"""

from __future__ import annotations


class BayesradError(Exception):
    """Base class of all bayesrad errors."""


class CohortError(BayesradError, ValueError):
    """A cohort table is inconsistent: duplicated or unknown patients, bad columns."""


class SchemaError(CohortError):
    """A column's values do not fit its declared type (e.g. text in a numeric column)."""


class MissingFileError(BayesradError, FileNotFoundError):
    """A file referenced by a manifest, a cohort directory or a model does not exist."""


class ImageError(BayesradError, ValueError):
    """An image or mask cannot be read or is unusable (empty mask, absent label, NaN voxels)."""


class ImageGeometryError(ImageError):
    """Image and mask (or dose grid) disagree in size, spacing, origin or direction."""


class FeatureError(BayesradError, ValueError):
    """Feature extraction settings or inputs are invalid."""


class GraphError(BayesradError, ValueError):
    """A graph is invalid: a cycle, an unknown kind, an impossible parent, an unknown node."""


class KnowledgeError(GraphError):
    """Expert knowledge contradicts itself (a required edge against the tiers, a required cycle)."""


class ModelError(BayesradError, ValueError):
    """A model cannot be fitted or queried with the given data or settings."""


class NotFittedError(ModelError, AttributeError):
    """A method that needs a fitted model was called before ``fit``."""


class ModelFileError(BayesradError, ValueError):
    """A saved model file is from an incompatible version, incomplete or tampered with."""


class OutputPathError(BayesradError, ValueError):
    """An output path cannot be written: a file where a folder is needed, or the reverse."""


class ConvergenceWarning(UserWarning):
    """A fit reached its step budget before its convergence criterion was met."""


__all__ = [
    "ConvergenceWarning",
    "OutputPathError",
    "BayesradError",
    "CohortError",
    "SchemaError",
    "MissingFileError",
    "ImageError",
    "ImageGeometryError",
    "FeatureError",
    "GraphError",
    "KnowledgeError",
    "ModelError",
    "NotFittedError",
    "ModelFileError",
]
