"""The README and docs cite only files that are in the repository.

Every relative Markdown link, and every path under ``docs/``, ``benchmarks/``, ``recipes/``,
``timm_gated_ssl/`` or ``tests/`` named in the text, must exist. Exempt: ``benchmarks/out/`` (what
the documented commands write), placeholders (``NAME``, a trailing ``_`` before a wildcard) and
``module.function`` references, which must name an existing module.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
CITED = re.compile(r"(?<![\w./-])((?:docs|benchmarks|recipes|timm_gated_ssl|tests)/[\w./-]*\w)")
LINK = re.compile(r"\]\(([^)#\s]+)")


def _exists(path: str) -> bool:
    if (ROOT / path).exists():
        return True
    module, _, attribute = path.rpartition(".")  # benchmarks/_photos.build_photo_crops
    return bool(attribute) and "/" not in attribute and (ROOT / f"{module}.py").is_file()


def _placeholder(path: str) -> bool:
    return path.startswith("benchmarks/out") or "NAME" in path or path.endswith("_")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cited_file_exists(doc: Path) -> None:
    text = doc.read_text()
    cited = {m.group(1) for m in CITED.finditer(text)}
    missing = sorted(p for p in cited if not _placeholder(p) and not _exists(p))
    links = {m.group(1) for m in LINK.finditer(text) if not m.group(1).startswith(("http://", "https://", "mailto:"))}
    broken = sorted(p for p in links if not (doc.parent / p).exists())
    assert not missing and not broken, f"{doc.name} cites missing files {missing} and links {broken}"
