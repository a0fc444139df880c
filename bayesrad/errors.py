"""Every error bayesrad raises on bad input.

One hierarchy in one place, so that a caller can catch ``BayesradError`` and a
message always names the culprit (patient, column, file or node) and the fix.
"""

from __future__ import annotations

import re

# numpy >= 2 writes scalars as ``np.int64(0)``, ``np.float64(1.5)``, ``np.str_('a')``,
# ``np.True_``: in a message that tells a user nothing (issue 17: "row np.int64(0)").
_NUMPY_SCALAR = re.compile(
    r"\bnp\.(?:u?int\d*|float\d*|longlong|longdouble|double|complex\d*|str_|bytes_|datetime64|timedelta64)"
    r"\(((?:[^()]|\([^()]*\))*)\)")
_NUMPY_BOOL = re.compile(r"\bnp\.(True|False)_")


def plain(value):
    """``value`` as plain Python, for a message: a numpy scalar becomes its Python value; a
    list, tuple, set, array or pandas Index becomes a list of plain values (recursively)."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    if isinstance(value, (list, tuple, set, frozenset)) or (
            hasattr(value, "tolist") and getattr(value, "ndim", 0) >= 1):
        return [plain(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
    return value


def plain_text(message: str) -> str:
    """``message`` with numpy scalar reprs (``np.int64(0)``, ``np.float64(inf)``,
    ``np.str_('a')``, ``np.True_``) written as plain Python ones (``0``, ``inf``, ``'a'``, ``True``)."""
    return _NUMPY_BOOL.sub(r"\1", _NUMPY_SCALAR.sub(r"\1", message))


class BayesradError(Exception):
    """Base class of all bayesrad errors.

    A message built from numpy values reads as plain Python (``row 0``, not
    ``row np.int64(0)``): the sources convert with :func:`plain`, and this class rewrites any
    numpy scalar repr left in the message (:func:`plain_text`)."""

    def __init__(self, *args):
        if args and isinstance(args[0], str):
            args = (plain_text(args[0]), *args[1:])
        super().__init__(*args)


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
