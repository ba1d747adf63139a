"""The README stays a front door and the docs stay a house with no doors to nowhere.

README.md is at most 12 KB, opens with a table of contents of its own sections, and keeps
the seed system's two `curl` examples line for line (its users copy them). Every relative
link in README.md and docs/*.md names a file inside the repository (and, for a Markdown
page, a heading that exists there); nothing points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 12_288

# The seed system's README examples, exactly as it prints them.
SEED_EXAMPLES = (
    """curl -X POST http://localhost:8080/orders \\
  -H "Content-Type: application/json" \\
  -H "X-Idempotency-Key: task-001" \\
  -d '{
    "customer_id": "cust_123",
    "items": [{"product_id": "prod_1", "quantity": 1, "price": 50.00}]
  }'""",
    """curl -X POST http://localhost:8080/orders \\
  -H "Content-Type: application/json" \\
  -H "X-Idempotency-Key: fail-001" \\
  -d '{
    "customer_id": "cust_123",
    "items": [{"product_id": "prod_1", "quantity": 1, "price": 600.00}]
  }'""",
)

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
    """The text without code: fenced blocks and inline code spans hold no links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    body = prose(text)
    return INLINE_LINK.findall(body) + REFERENCE_LINK.findall(body)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, title in HEADING.findall(FENCE.sub("", text)):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_the_readme_is_at_most_12_kb() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/"


def test_the_readme_opens_with_a_table_of_contents_of_its_own_sections() -> None:
    text = README.read_text()
    before_first_section = prose(text).split("\n## ", 1)[0]
    toc = set(re.findall(r"^\s*[-*] \[[^\]]+\]\(#([^)]+)\)", before_first_section, re.M))
    sections = {
        slug(title) for level, title in HEADING.findall(FENCE.sub("", text)) if level == "##"
    }
    assert toc, "README.md needs a table of contents before its first ## section"
    assert toc <= anchors(text), f"the contents name missing sections: {toc - anchors(text)}"
    assert sections <= toc, f"sections missing from the contents: {sections - toc}"


def test_the_readme_keeps_the_seed_s_curl_examples_line_for_line() -> None:
    text = README.read_text()
    for example in SEED_EXAMPLES:
        assert example in text, f"README.md lost the seed's example:\n{example}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_resolves_inside_the_repository(page: Path) -> None:
    text = page.read_text()
    assert "shared/CONTRACT.md" not in text, "the contract is docs/reference.md now"
    broken: list[str] = []
    for target in links(text):
        parts = urlsplit(target)
        if parts.scheme in ("http", "https", "mailto"):
            continue
        assert not parts.scheme and not parts.netloc, f"{target}: not a relative link"
        path = unquote(parts.path)
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
            continue
        if not dest.exists():
            broken.append(f"{target}: no such file")
            continue
        fragment = unquote(parts.fragment)
        if fragment and dest.suffix == ".md" and fragment not in anchors(dest.read_text()):
            broken.append(f"{target}: no such heading in {dest.relative_to(ROOT)}")
    assert not broken, f"{page_id(page)}:\n" + "\n".join(broken)


def test_the_docs_index_names_every_page() -> None:
    index = (ROOT / "docs" / "README.md").read_text()
    pages = {p.name for p in PAGES if p.parent == ROOT / "docs" and p.name != "README.md"}
    missing = {name for name in pages if name not in index}
    assert not missing, f"docs/README.md does not name {missing}"
