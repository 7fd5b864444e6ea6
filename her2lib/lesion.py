"""Lesion geometry of a mask: its centre and, for a volume, its largest slice (where figures centre a view).

Science layer; NumPy only, so the figure modules that need these do not pull in torch.
"""

from __future__ import annotations

import numpy as np

from .errors import ParameterError

__all__ = ["lesion_centre", "largest_lesion_slice"]


def lesion_centre(mask: np.ndarray) -> tuple[int, ...]:
    """Integer centre of mass of the lesion mask (array index order); the array centre if the mask is empty."""
    m = np.asarray(mask) > 0
    if not m.any():
        return tuple(int(s // 2) for s in m.shape)
    idx = np.argwhere(m)
    return tuple(int(round(v)) for v in idx.mean(axis=0))


def largest_lesion_slice(mask: np.ndarray) -> int:
    """Index along axis 0 (z) of the slice with the largest lesion area; ties go to the slice nearest the
    lesion's centre of mass (then the lower index). The middle slice for an empty mask.

    Parameters
    ----------
    mask : ndarray, shape (D, H, W)
    """
    m = np.asarray(mask) > 0
    if m.ndim != 3:
        raise ParameterError(f"largest_lesion_slice: need a (D, H, W) mask; got shape {m.shape}.")
    area = m.reshape(m.shape[0], -1).sum(axis=1)
    if not area.any():
        return m.shape[0] // 2
    zc = float((np.arange(len(area)) * area).sum() / area.sum())
    best = np.flatnonzero(area == area.max())
    return int(best[np.argmin(np.abs(best - zc))])
