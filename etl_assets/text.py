"""Showing values from the source: cut to a length, and as a Markdown preview table."""

from __future__ import annotations

import pandas as pd

# Preview cells are cut to this many characters: a 1 MB value must not become 1 MB of metadata.
PREVIEW_CELL_CHARS = 60


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, a cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def preview_markdown(frame: pd.DataFrame) -> str:
    """The frame as a Markdown table, every header and cell cut to PREVIEW_CELL_CHARS."""
    cut = frame.map(lambda value: value if value is None else clip(str(value), PREVIEW_CELL_CHARS))
    cut.columns = [clip(str(name), PREVIEW_CELL_CHARS) for name in frame.columns]
    return cut.to_markdown(index=False)
