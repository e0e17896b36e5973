"""What a long experiment has finished, on disk, so that running it again resumes it.

An experiment made of many small pieces (a classifier fit per split and layer, a from-scratch
training per split) records each finished piece's result in ``OUT/<kind>.partial.json`` under a *key*:
everything the pieces' results depend on (the features' fingerprint, the seed, the penalty ...). A
later run with the same key reads them back instead of redoing them; a run with another key starts
afresh (and overwrites the file). Each piece is written atomically as it finishes, so a kill loses at
most the piece in progress.

Example:
    >>> ledger = Ledger(Path(tmp) / "probes.partial.json", {"seed": 0})  # doctest: +SKIP
    >>> ledger.get("svm conv1 0") is None  # doctest: +SKIP
    True
    >>> ledger.put("svm conv1 0", {"accuracy": 0.5})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .._io import atomic_write_json

__all__ = ["Ledger"]

log = logging.getLogger("zfnet")


class Ledger:
    """Finished pieces of an experiment in a JSON file, valid while its key matches.

    Args:
        path: the file (``OUT/<kind>.partial.json``).
        key: what the pieces depend on, JSON-serialisable; a file saved under another key is ignored.
    """

    def __init__(self, path: Path, key: dict[str, Any]) -> None:
        self.path = Path(path)
        self.key = json.loads(json.dumps(key))
        self.done: dict[str, Any] = {}
        if self.path.is_file():
            try:
                saved = json.loads(self.path.read_text())
            except ValueError:
                saved = {}
            if isinstance(saved, dict) and saved.get("key") == self.key and isinstance(saved.get("done"), dict):
                self.done = dict(saved["done"])
                if self.done:
                    log.info("resuming: %d finished piece(s) read from %s", len(self.done), self.path)

    def get(self, name: str) -> Any:
        """The result of piece ``name``, or None when it is not finished."""
        return self.done.get(name)

    def put(self, name: str, value: Any) -> None:
        """Record piece ``name`` as finished with ``value`` (written at once)."""
        self.done[name] = value
        atomic_write_json(self.path, {"key": self.key, "done": self.done})
