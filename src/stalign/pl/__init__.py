"""Plotting: crop gallery for quality control."""

from ._crops import crops

__all__ = ["crops"]
