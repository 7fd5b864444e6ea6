"""Figures: every plot her2lib draws, one module per notebook's figures (science layer).

Each function takes results (DataFrames, arrays, result objects) and a target path, draws with matplotlib's
object API (never ``pyplot`` state the user's kernel shares beyond the figure it creates, never
``matplotlib.use``), saves atomically through :func:`her2lib.io.save_figure` and returns the figure.
"""
