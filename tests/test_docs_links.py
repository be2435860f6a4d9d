"""Links between the README and the pages of docs/ lead somewhere: every relative link names a file that exists and,
with ``#anchor``, a heading of that file (GitHub's anchors). The README sends newcomers to docs/; a section moved
or renamed must not leave them at a dead link."""

import re
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
PAGES = [BASE / "README.md", *sorted((BASE / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchor(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def test_every_relative_link_of_the_readme_and_docs_leads_to_a_file_and_heading():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not ours to check
            path, _, fragment = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(BASE)}: {target}"
            if not linked.exists():
                broken.append(f"{where}: no such file")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{where}: no heading with that anchor")
    assert not broken, "\n".join(broken)


def test_the_readme_stays_a_newcomers_page():
    lines = (BASE / "README.md").read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines: move the details to docs/ (issue 21: at most about 200)"
