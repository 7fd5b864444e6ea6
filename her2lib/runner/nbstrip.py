"""Strip outputs and execution counts from notebooks (they are committed clean; executed copies go to reports/).

Usage: ``python -m her2lib.runner.nbstrip notebooks/*.ipynb`` (``--check`` only reports, exit 1 if any is dirty).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..io import write_text

__all__ = ["is_clean", "strip_notebook", "main"]


def is_clean(nb: dict) -> bool:
    """True when no code cell has outputs or an execution count."""
    return not any(
        c.get("outputs") or c.get("execution_count") for c in nb.get("cells", []) if c.get("cell_type") == "code"
    )


def strip_notebook(path: str | Path) -> bool:
    """Remove outputs and execution counts in place (atomically); return True if the file changed."""
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    if is_clean(nb):
        return False
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    write_text(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    dirty = []
    for p in paths:
        if check:
            if not is_clean(json.loads(Path(p).read_text(encoding="utf-8"))):
                dirty.append(p)
        elif strip_notebook(p):
            print(f"stripped {p}")
    for p in dirty:
        print(f"has outputs: {p} (run: python -m her2lib.runner.nbstrip {p})")
    return 1 if dirty else 0


if __name__ == "__main__":
    sys.exit(main())
