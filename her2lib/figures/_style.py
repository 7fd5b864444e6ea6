"""The look every her2lib figure shares: one rc context and one colour per model (Okabe-Ito, colour-blind safe).

Science layer (figures).
"""

from __future__ import annotations

import matplotlib as mpl

__all__ = ["MODEL_COLORS", "style"]

#: Okabe-Ito colours (colour-blind safe), one per model of :data:`her2lib.contract.MODELS`.
MODEL_COLORS = {"dl_us": "#0072B2", "dl_mri": "#D55E00", "dl_us_mri": "#009E73"}

_RC = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 12,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.bbox": "tight",
}


def style():
    """A ``matplotlib.rc_context`` with her2lib's figure style: create and save the figure inside it."""
    return mpl.rc_context(_RC)
