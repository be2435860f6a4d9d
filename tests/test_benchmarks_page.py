"""docs/benchmarks.md is written by ``bin/bench``, with the explanation of its figures (bench/about.md) above the
results: an edit of that explanation shows on the page only once copied there (or the benchmarks run again)."""

from pathlib import Path

BASE = Path(__file__).resolve().parent.parent


def test_the_benchmarks_page_carries_the_explanation_of_its_figures_above_the_last_run():
    page = (BASE / "docs" / "benchmarks.md").read_text()
    about = (BASE / "bench" / "about.md").read_text().rstrip("\n")
    assert page.startswith(f"# Benchmarks\n\n{about}\n\n## Last run\n"), (
        "copy bench/about.md into docs/benchmarks.md between its title and '## Last run' (bench/__main__.py's write())")
