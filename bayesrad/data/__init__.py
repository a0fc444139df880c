"""Cohorts, readers and validation (the bottom layer: imports nothing from bayesrad above it)."""

from bayesrad.data.cohort import Cohort
from bayesrad.data.schema import ColumnType

__all__ = ["Cohort", "ColumnType"]
