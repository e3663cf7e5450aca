"""The documentation: generated tables current (``tools/docs_tables.py --check``), a stale table caught,
the README short, every relative link resolving, every page of docs/index.md present."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parent.parent
README_MAX_LINES = 300
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
CODE = re.compile(r"`[^`\n]*`")


def load_docs_tables():
    spec = importlib.util.spec_from_file_location("docs_tables", REPO / "tools" / "docs_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def docs_tables():
    return load_docs_tables()


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def test_generated_tables_are_current(docs_tables, capsys):
    assert docs_tables.main(["--check"]) == 0, capsys.readouterr().err


def test_a_stale_table_is_named_with_the_command(docs_tables, tmp_path, capsys):
    page = tmp_path / "deploy.md"
    shutil.copy(REPO / "docs" / "deploy.md", page)
    text = page.read_text(encoding="utf-8")
    start = text.index("<!-- generated:deploy_latency -->")
    row = text.index("| micronet_m0 |", start)
    page.write_text(text[:row] + "| micronet_m0 | 0.01 " + text[row + len("| micronet_m0 |") :], encoding="utf-8")

    assert docs_tables.check([page], REPO) == [f"{page}: table 'deploy_latency'"]
    assert docs_tables.main(["--check", str(page)]) == 1
    err = capsys.readouterr().err
    assert "deploy_latency" in err and "python tools/docs_tables.py" in err
    assert page.read_text(encoding="utf-8") != text  # --check wrote nothing

    assert docs_tables.main([str(page)]) == 0  # regenerating repairs it
    assert page.read_text(encoding="utf-8") == text


def test_a_marker_without_its_partner_is_an_error(docs_tables, tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- generated:deploy_latency -->\n| a |\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no partner"):
        docs_tables.check([page], REPO)


def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; move sections to docs/ (at most {README_MAX_LINES})"
    )


def test_readme_keeps_the_two_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for marker in ("<!-- main-command -->\n```bash\n", "<!-- test-command -->\n```bash\npip install"):
        assert marker in text


@pytest.mark.parametrize("document", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(document):
    text = CODE.sub("", FENCE.sub("", document.read_text(encoding="utf-8")))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (document.parent / unquote(path_part)).resolve() if path_part else document
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{document.relative_to(REPO)}: broken links {broken}"


def test_every_docs_page_is_listed_in_the_index():
    index = REPO / "docs" / "index.md"
    listed = {(index.parent / t).resolve() for t in LINK.findall(index.read_text(encoding="utf-8"))}
    pages = {p.resolve() for p in (REPO / "docs").rglob("*.md") if p != index}
    assert not pages - listed, f"pages missing from docs/index.md: {sorted(map(str, pages - listed))}"
    assert all(p.exists() for p in listed if p.suffix == ".md")


# Where each `##` section of the README (before it was cut to its essentials) lives now.
OLD_README_SECTIONS = {
    "Quickstart (offline, a few minutes on a laptop CPU)": "docs/training.md",
    "Training: `dynzoo train`": "docs/training.md",
    "Evaluation: `dynzoo eval`": "docs/training.md",
    "MicroNet (thesis ch. 4)": "docs/models/micronet.md",
    "Dynamic convolution: CondConv, DY-Conv and DCD (thesis ch. 3)": "docs/models/dynamic_conv.md",
    "DRNets — Dynamic Routing Networks": "docs/models/drnet.md",
    "CDB — Context-aware Dynamic Block (CDB-ResNet)": "docs/models/cdb.md",
    "Dynamic Residual Transfer and CovNorm (thesis ch. 6 and ch. 2)": "docs/models/drt_covnorm.md",
    "Differentiable Dynamic Wirings (DDW)": "docs/models/ddw.md",
    "Domain-aware dynamic networks (DDN)": "docs/models/ddn.md",
    "Pretrained weights": "docs/weights.md",
    "Deploying to phones": "docs/deploy.md",
    "Android demo": "docs/android.md",
    "Web demo": "docs/web_demo.md",
    "Official checkpoints, safely": "docs/weights.md",
    "Profiler": "docs/deploy.md",
    "Tests": "docs/testing.md",
}


@pytest.mark.parametrize("section", sorted(OLD_README_SECTIONS))
def test_every_old_readme_section_has_a_home(section):
    page = REPO / OLD_README_SECTIONS[section]
    headings = re.findall(r"^#{1,3} (.+)$", FENCE.sub("", page.read_text(encoding="utf-8")), re.MULTILINE)
    assert section in headings, f"section {section!r} of the old README is not a heading of {page.name}"
