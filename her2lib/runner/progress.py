"""Live progress of a batch in the terminal: which notebook runs, and during training which model, fold and
epoch, with the selection-set loss and AUC and an ETA from the epochs left (not from earlier notebooks' times).

The training stage appends one JSON line per epoch to ``logs/progress.jsonl`` in the run folder
(:func:`her2lib.stages.log_progress`); :class:`ProgressMonitor` follows that file from the runner process while
papermill executes the notebook, so the terminal shows the kernel's progress without streaming its output.

Runner layer.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["ProgressMonitor", "read_events"]


def read_events(path: str | os.PathLike, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines of ``path`` from byte ``offset``; returns them and the offset after the last one.

    A last line without its newline (being written, or cut short by a killed run) is left for the next call;
    a line that is not JSON is skipped.
    """
    path = Path(path)
    if not path.is_file():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    events = []
    for raw in data[:end].splitlines():
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events, offset + end


class ProgressMonitor:
    """Follow a run's progress log while one notebook executes; show an epoch bar per trained model.

    Parameters
    ----------
    path : path-like
        The run's ``logs/progress.jsonl``; events already in it (earlier notebooks or runs) are not shown.
    label : str
        Prefix of the bar (the notebook, e.g. ``"[4/8] 03_train_us"``).
    file : text stream
        Where the bar goes (the terminal's stderr by default).
    interval : float
        Seconds between reads of the log.
    """

    def __init__(self, path: str | os.PathLike, label: str, *, file: TextIO | None = None, interval: float = 0.5):
        self.path = Path(path)
        self.label = label
        self.file = file if file is not None else sys.stderr
        self.interval = interval
        self.offset = self.path.stat().st_size if self.path.is_file() else 0
        self.bar: tqdm | None = None
        self.shown: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="her2lib-progress", daemon=True)

    def __enter__(self) -> ProgressMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()
        self._close()

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        """Read the events written since the last call and show them."""
        events, self.offset = read_events(self.path, self.offset)
        for event in events:
            self.handle(event)

    def handle(self, event: dict[str, Any]) -> None:
        """Show one event: ``start`` opens a bar over the model's epochs, ``epoch`` advances it, ``end`` closes it."""
        self.shown.append(event)
        kind = event.get("event")
        if kind == "start":
            self._close()
            self.bar = tqdm(
                total=int(event.get("total") or 0) or None,
                desc=f"{self.label} {event.get('model', '')}".strip(),
                unit="epoch",
                file=self.file,
                smoothing=0.1,
                dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n}/{total} epochs [{elapsed}<{remaining}]{postfix}",
            )
        elif kind == "epoch" and self.bar is not None:
            rep = f"repeat {event['repeat']} " if event.get("n_repeats", 1) > 1 else ""
            self.bar.set_postfix_str(
                f"{rep}fold {event.get('fold')} ({int(event.get('fold', 0)) + 1}/{event.get('n_folds')}) epoch "
                f"{event.get('epoch')}/{event.get('epochs')} loss {event.get('val_loss', float('nan')):.3f} "
                f"{event.get('auc_name', 'AUC')} {event.get('val_auc', float('nan')):.3f}",
                refresh=False,
            )
            self.bar.update(1)
        elif kind == "end":
            self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
