"""References from the code to the documentation lead somewhere: every ``docs/<file>.md`` named in the repository's
code, templates and Markdown exists, and every section named beside it (``docs/architecture.md, "Trust"``) is a
heading of that file. A reader of the repository has what the docstrings point to."""

import os
import re
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
SKIPPED = {".venv", ".git", "storage", "node_modules", "__pycache__"}
SUFFIXES = {".py", ".md", ".html", ".yaml", ".yml", ".toml", ".txt"}
# docs/architecture.md, optionally followed by the section: , "Trust"  or  ("Redis")
REFERENCE = re.compile(r'docs/([\w./-]+?\.md)(?:,? \(?"([^"\n]+)"\)?)?')


def text_files():
    for directory, subdirectories, names in os.walk(BASE):
        subdirectories[:] = [d for d in subdirectories if d not in SKIPPED]
        for name in names:
            path = Path(directory, name)
            relative = path.relative_to(BASE)
            if path.suffix in SUFFIXES or relative.parts[0] == "bin":
                yield relative, path.read_text(errors="replace")


def headings(markdown):
    return {line.lstrip("#").strip() for line in markdown.splitlines() if re.match(r"#{1,6} ", line)}


def references():
    found = []
    for relative, text in text_files():
        for match in REFERENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{relative}:{line}", match.group(1), match.group(2)))
    return found


def test_every_docs_reference_names_an_existing_file_and_section():
    found = references()
    assert any(name == "architecture.md" for _, name, _ in found)  # the pattern still finds what it is for
    broken = []
    for where, name, section in found:
        target = BASE / "docs" / name
        if not target.is_file():
            broken.append(f"{where}: docs/{name} does not exist")
        elif section is not None and section not in headings(target.read_text()):
            broken.append(f"{where}: docs/{name} has no section {section!r}")
    assert not broken, "\n".join(broken)


def test_no_code_refers_to_a_design_document_outside_the_repository():
    stray = [f"{relative}" for relative, text in text_files() if re.search(r"\bDESIGN\.md\b", text)
             and relative != Path(__file__).relative_to(BASE)]
    assert not stray, f"refer to docs/architecture.md instead of DESIGN.md in: {', '.join(stray)}"
