"""Cut the project's own documentation into long benign documents for the injection screen's
meaning model: ``injection_documents.jsonl``.

    python scripts/data/detection/cut_documents.py

Ordinary technical prose full of imperatives addressed to its reader ("run", "set", "install",
"send"), commands, configuration and tables: what users paste and agents read, and what a model
trained on short prompts took for instructions to it. The files are this repository's own
(written here, not a public set): the docs (``docs/security.md``, which quotes attacks, left
out) and the module docstrings of the Python packages.
Pieces of about 2,500 characters, cut at blank lines; every other piece arrives as a tool result.
The output is kept in the repository, so training does not change when the docs do.
"""

# ruff: noqa: T201

from __future__ import annotations

import ast
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SOURCES = (
    "README.md",
    "CONTRIBUTING.md",
    "bench/README.md",
    "docs/api.md",
    "docs/architecture.md",
    "docs/benchmarks.md",
    "docs/capacity.md",
    "docs/embedded.md",
    "docs/operations.md",
    "docs/scanners.md",
    "docs/semantic-cache.md",
    "docs/tenants.md",
)
PIECE = 2_500
# And the module docstrings of the project's Python packages, one document per package.
PACKAGES = ("gateway", "privacy", "llmplatform", "deployments")


def pieces(text: str) -> list[str]:
    out, current = [], ""
    for paragraph in text.split("\n\n"):
        current = f"{current}\n\n{paragraph}" if current else paragraph
        if len(current) >= PIECE:
            out.append(current.strip())
            current = ""
    if len(current) >= PIECE // 2:
        out.append(current.strip())
    return out


def docstrings(package: str) -> str:
    texts = []
    for path in sorted((REPO / package).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        if docstring and len(docstring) > 200:
            texts.append(docstring)
    return "\n\n".join(texts)


def main() -> None:
    rows = []
    for source in SOURCES:
        rows.extend(pieces((REPO / source).read_text(encoding="utf-8")))
    for package in PACKAGES:
        rows.extend(pieces(docstrings(package)))
    path = Path(__file__).with_name("injection_documents.jsonl")
    with open(path, "w", encoding="utf-8") as out:
        for index, text in enumerate(rows, 1):
            row = {
                "id": f"inj-doc-{index:04d}",
                "text": text,
                "label": 0,
                "kind": "document",
                "lang": "en",
                "role": "tool" if index % 2 == 0 else "user",
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} documents to {path}")


if __name__ == "__main__":
    main()
