"""benchmarks/_publish.py: only the text between a block's markers is replaced."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import load_script


def test_replaces_the_block_and_keeps_the_rest(tmp_path: Path) -> None:
    publish = load_script("benchmarks/_publish.py")
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- t:begin -->\nold\n<!-- t:end -->\nafter\n<!-- u:begin -->\nkeep\n<!-- u:end -->\n")
    publish.replace_between(page, "t", "| new |")
    publish.replace_between(page, "t", "| newer |")  # a rerun replaces what the first run wrote
    assert page.read_text() == ("intro\n<!-- t:begin -->\n| newer |\n<!-- t:end -->\nafter\n"
                                "<!-- u:begin -->\nkeep\n<!-- u:end -->\n")


def test_a_missing_marker_writes_nothing(tmp_path: Path) -> None:
    publish = load_script("benchmarks/_publish.py")
    page = tmp_path / "page.md"
    page.write_text("<!-- t:end -->\n<!-- t:begin -->\n")
    with pytest.raises(SystemExit, match="needs the lines <!-- t:begin --> and <!-- t:end -->"):
        publish.replace_between(page, "t", "x")
    assert page.read_text() == "<!-- t:end -->\n<!-- t:begin -->\n"
