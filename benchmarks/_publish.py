"""Writing measured results into the docs: the text between two markers of a Markdown page.

Every benchmark that publishes a table keeps it between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` in its page, so a rerun replaces exactly what the script wrote and nothing
typed around it.
"""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """The begin and end markers of the block ``name``."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_between(path: str | Path, name: str, body: str) -> None:
    """Replace what lies between the markers of block ``name`` in ``path`` with ``body``.

    Raises:
        SystemExit: The page lacks a marker, or has them out of order (nothing is written).
    """
    path = Path(path)
    text = path.read_text()
    begin, end = markers(name)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise SystemExit(f"{path} needs the lines {begin} and {end}, in this order, around the block to write")
    start += len(begin)
    path.write_text(text[:start] + "\n" + body + "\n" + text[stop:])
    print(f"updated {path}")
