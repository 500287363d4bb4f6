"""Data shipped with rewardflow: the GSM8K example model solutions (MIT, (c) 2021 OpenAI; see README.md here)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["GSM8K_EXAMPLES", "gsm8k_examples", "gsm8k_examples_path"]

GSM8K_EXAMPLES = "gsm8k_example_solutions.jsonl.gz"


def gsm8k_examples_path() -> Path:
    """Path of the packaged GSM8K example solutions (gzipped JSONL, 5,276 rows)."""
    return Path(str(resources.files(__name__).joinpath(GSM8K_EXAMPLES)))


def gsm8k_examples(limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Rows ``{prompt, completion, answer, model, is_correct}`` of the packaged GSM8K example solutions."""
    with gzip.open(gsm8k_examples_path(), "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if limit is not None and i >= limit:
                return
            yield json.loads(line)
