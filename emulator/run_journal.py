"""What the user's code did during a run, written by the process that runs it (see
``emulator.runtime``) and read afterwards by the pre-flight of a notebook.

One JSON object per line, each with an ``event``: ``estimator`` (an RLEstimator was built:
its arguments as the user wrote them), ``fit`` (a training job ended: its name, outcome,
log and artifacts), ``deploy``, ``predict`` and ``delete_endpoint``. Nothing is written
unless the run's environment names a journal file in ``JOURNAL_ENV``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

JOURNAL_ENV = "SMRL_RUN_JOURNAL"
ESTIMATOR, FIT, DEPLOY, PREDICT, DELETE_ENDPOINT = "estimator", "fit", "deploy", "predict", "delete_endpoint"


def json_safe(value: Any) -> Any:
    """`value` as JSON can hold it: enums as their values, other objects as text."""
    return json.loads(json.dumps(value, default=lambda v: getattr(v, "value", None) or str(v)))


def record(event: str, **fields: Any) -> None:
    """Appends one event to the journal named by ``JOURNAL_ENV``; nothing when none is named."""
    path = os.environ.get(JOURNAL_ENV)
    if path:
        with open(path, "a") as journal:
            journal.write(json.dumps({"event": event, **json_safe(fields)}) + "\n")


def read(path: Path) -> list[dict[str, Any]]:
    """The events of a journal, in order; none when the run wrote none."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
