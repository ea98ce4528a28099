"""The documentation holds together: README.md maps every page of docs/ and each of its sections, every relative link
of README.md and docs/*.md reaches a file (and, with an #anchor, a heading of that file), and the results blocks that
scripts/readme_results.py writes sit between their markers."""
import importlib.util
import re

import pytest

from conftest import REPO

README = REPO / "README.md"
PAGES = sorted((REPO / "docs").glob("*.md"))
DOCUMENTS = [README, *PAGES]
LINK = re.compile(r"!?\[[^\]]*\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)")
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:: not a file of the project


def documentation_text() -> str:
    """README.md and every docs page together: where a name the documentation must mention may stand."""
    return "\n".join(path.read_text(encoding="utf-8") for path in DOCUMENTS)


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans, where brackets are not links."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else line)
    return re.sub(r"`[^`]*`", "", "\n".join(lines))  # a code span may run over a line break


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: its text lowercased, punctuation other than '-' and '_' dropped, spaces to '-'
    (Markdown's own marks, code ticks and link brackets, are not part of the text)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = re.sub(r"[^\w\- ]", "", text.replace("`", "").lower())
    return text.replace(" ", "-")


def anchors(path) -> list[str]:
    """The anchors of a Markdown file's headings, a repeated one numbered as GitHub numbers it (-1, -2, ...)."""
    seen: dict[str, int] = {}
    out = []
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)):
            base = anchor(m.group(1))
            out.append(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return out


def links(path) -> list[str]:
    return LINK.findall(prose(path.read_text(encoding="utf-8")))


def test_anchors_follow_githubs_rule():
    assert anchor("How precise a run's Avg is") == "how-precise-a-runs-avg-is"
    assert anchor("The study: when does DSKD help?") == "the-study-when-does-dskd-help"
    assert anchor("Figure 2, LLM-as-judge win rates") == "figure-2-llm-as-judge-win-rates"
    assert anchor("Set-up: two commands") == "set-up-two-commands"
    assert anchor("`repro.grid` and teacher_states") == "reprogrid-and-teacher_states"


def test_the_readme_maps_every_docs_page_and_each_of_its_sections():
    """Every page of docs/ is linked from README.md, and so is each of its sections (``##`` headings): whatever moved
    out of the README is one click from its map."""
    assert PAGES, "docs/ holds no page"
    targets = set(links(README))
    missing = []
    for page in PAGES:
        relative = page.relative_to(REPO).as_posix()
        if not any(t.split("#")[0] == relative for t in targets):
            missing.append(relative)
        sections = [anchor(m) for m in re.findall(r"^## (.+)$", prose(page.read_text(encoding="utf-8")), re.M)]
        missing += [f"{relative}#{a}" for a in sections if f"{relative}#{a}" not in targets]
    assert missing == []


def test_every_make_target_and_script_is_named_in_the_documentation():
    """Each target of the Makefile (``make X``) and each file of scripts/ is named in README.md or a docs page."""
    text = documentation_text()
    phony = re.search(r"^\.PHONY:(.*)$", (REPO / "Makefile").read_text(encoding="utf-8"), re.M).group(1).split()
    assert {"repro", "test"} <= set(phony)
    missing = [f"make {t}" for t in phony if f"make {t}" not in text]
    missing += [f"scripts/{p.name}" for p in sorted((REPO / "scripts").iterdir()) if p.is_file() and p.name not in text]
    assert missing == []


def test_every_docs_page_opens_with_its_title_and_what_it_covers():
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("# ") and lines[1] == "" and lines[2] and not lines[2].startswith("#"), page.name


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_reaches_a_file_and_its_heading(path):
    broken = []
    for target in links(path):
        if SCHEME.match(target):
            continue
        file, _, fragment = target.partition("#")
        destination = (path.parent / file).resolve() if file else path
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif fragment and (destination.suffix != ".md" or fragment not in anchors(destination)):
            broken.append(f"{target}: no heading #{fragment} in {destination.relative_to(REPO)}")
    assert broken == []


def test_the_results_blocks_sit_between_the_markers_the_script_writes():
    """README.md holds the summary and docs/results.md the claims, each between the markers of
    scripts/readme_results.py, so that ``--write`` and ``--check`` find them."""
    spec = importlib.util.spec_from_file_location("readme_results", REPO / "scripts" / "readme_results.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.PAGES == {"summary": README, "claims": REPO / "docs" / "results.md"}
    for name, path in script.PAGES.items():
        text = path.read_text(encoding="utf-8")
        start = script.start_marker(name)
        assert text.count(start) == 1, (path, start)
        block = text.split(start, 1)[1].split(script.END, 1)
        assert len(block) == 2 and block[0].strip(), (path, name)
        assert script.replace_block(text, name, block[0].strip(), path) == text  # written as --write writes it
