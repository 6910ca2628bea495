"""The documentation points inside the repository, and what it points at exists.

* every relative Markdown link in a tracked .md file resolves to a file (and its `#anchor` to a heading or an
  `<a id>` of that file);
* every `docs/X.md` named in code, tests, benchmarks, scripts or docs exists, and every `docs/X.md §N` names a
  section that X.md has (a heading numbered N, or an `<a id="N">` anchor such as §vision);
* nothing cites a file outside the repository (the project's old reference notes, or a machine path).

Text only, no imports of the package: well under a second.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")                 # [text](target), not images
_SEC = r"§\s*[\w.]+(?:\s*[–-]\s*[\w.]+)?"                                # §3.2, §4.1–4.2, §vision
CITE = re.compile(rf"docs/([\w.-]+\.md)((?:,?\s*{_SEC})*)")              # docs/X.md §3.2, §3.6
DOC_CITE = re.compile(rf"\]\(([\w.-]+\.md)\)((?:,?\s*{_SEC})*)")          # inside docs/: [X.md](X.md) §3
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$", re.M)
ANCHOR = re.compile(r'<a\s+id="([^"]+)"')
# outside the repository: the old external reference sheets, and machine paths (split so this file passes)
OUTSIDE = re.compile("|".join([r"\bfacts\s*§", "fact" + " sheet", "peers" + r"\.md", "environment" + "-notes",
                               "minigptv2" + "-facts", "/work/" + "shared", "shared/" + "reference"]), re.I)


def tracked(*suffixes: str) -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
        files = [ROOT / f for f in out]
    except (OSError, subprocess.CalledProcessError):            # not a git checkout: walk the tree
        files = [p for p in ROOT.rglob("*") if ".git" not in p.parts and ".venv" not in p.parts]
    return sorted(p for p in files if p.suffix in suffixes and p.is_file())


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, markup and punctuation dropped, spaces -> '-'."""
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(md: Path) -> set[str]:
    text = md.read_text(encoding="utf-8")
    return {slug(h) for h in HEADING.findall(text)} | set(ANCHOR.findall(text))


def sections(md: Path) -> set[str]:
    """Section numbers of a page ("3", "3.2", ...) and its named anchors ("vision")."""
    text = md.read_text(encoding="utf-8")
    nums = {m.group(1).rstrip(".") for m in re.finditer(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s", text, re.M)}
    return nums | set(ANCHOR.findall(text))


def test_relative_links_resolve():
    broken = []
    for md in tracked(".md"):
        text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)   # code blocks hold no links
        for target in LINK.findall(text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):         # http:, https:, mailto: ...
                continue
            path, _, frag = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            where = f"{md.relative_to(ROOT)}: ({target})"
            if not dest.exists():
                broken.append(where + " -> no such file")
            elif frag and dest.suffix == ".md" and frag not in anchors(dest):
                broken.append(where + " -> no such heading or anchor")
    assert not broken, "broken links:\n" + "\n".join(broken)


def cited_sections(spec: str) -> list[str]:
    """'§3.2, §4.1–4.2' -> ['3.2', '4.1', '4.2']."""
    out = []
    for item in re.findall(r"§\s*([\w.]+(?:\s*[–-]\s*[\w.]+)?)", spec):
        out += [x.rstrip(".") for x in re.split(r"\s*[–-]\s*", item)]
    return out


def test_cited_docs_and_sections_exist():
    missing = []
    for f in tracked(".py", ".md", ".sh", ".toml"):
        if f.name == "test_docs.py":
            continue
        text = f.read_text(encoding="utf-8")
        found = [(ROOT / "docs" / m.group(1), m.group(0), m.group(2)) for m in CITE.finditer(text)]
        if f.parent == ROOT / "docs":
            found += [(f.parent / m.group(1), m.group(0), m.group(2)) for m in DOC_CITE.finditer(text)]
        for page, cite, spec in found:
            where = f"{f.relative_to(ROOT)}: {cite.strip()}"
            if not page.exists():
                missing.append(where + " -> no such page")
                continue
            have = sections(page)
            missing += [f"{where} -> {page.name} has no §{s}" for s in cited_sections(spec) if s not in have]
    assert not missing, "\n".join(missing)


def test_nothing_cites_files_outside_the_repository():
    hits = []
    for f in tracked(".py", ".md", ".sh", ".toml", ".txt", ".json", ".yaml", ".yml"):
        if "fixtures" in f.parts and f.suffix == ".json":
            continue
        for n, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not hits, "cites something outside the repository:\n" + "\n".join(hits)


def test_readme_stays_a_short_tour():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250, "README.md is for newcomers; move details to docs/"
    for cmd in ("bash scripts/setup.sh && .venv/bin/minigptv2 demo",
                "bash scripts/setup.sh && .venv/bin/python -m pytest -q"):
        assert f"\n{cmd}\n" in readme, f"the Quick start command changed: {cmd}"


PATH_REF = re.compile(r"(?<![\w./-])((?:minigptv2|tests|benchmarks|recipes|scripts)/[\w/.-]*\.(?:py|md|sh|jsonl|json))\b"
                      r"(?:::(\w+))?")
TEST_REF = re.compile(r"`::(test_\w+)`")                               # `::name`: a test in the last file named


def test_named_repository_files_and_tests_exist():
    """A repository path named anywhere (a module, a test file, a test in it as `file::test_z`) exists: layout moves leave
    no stale pointer), and so does a test named after it, or after a bare `::test_z` that follows it."""
    stale = []
    for f in tracked(".md", ".py", ".toml", ".sh"):
        text = f.read_text(errors="replace")
        last = None
        for m in re.finditer(PATH_REF.pattern + "|" + TEST_REF.pattern, text):
            path, name, bare = m.group(1), m.group(2), m.group(3)
            if path:
                last = ROOT / path
                if not last.exists() and "*" not in path:
                    stale.append(f"{f.relative_to(ROOT)}: {path}")
                    continue
            name = name or bare
            if name and last is not None and last.suffix == ".py" and last.is_file() and \
                    not re.search(rf"^\s*def {name}\b", last.read_text(), re.M):
                stale.append(f"{f.relative_to(ROOT)}: {last.relative_to(ROOT)}::{name}")
    assert not stale, "\n".join(stale)
