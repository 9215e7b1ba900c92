"""The docs stay true to the checkout: every link lands, every file and script they name exists,
the README leads to every page, and the commands that can run here do.

Commands that need a cloud account or a cluster are checked for the files
and scripts they name; the project's own commands run with `--help` (and the
reference generator with `--check`), so a renamed flag or script fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")
# Paths of the project that docs name in backticks or in commands.
NAMED_PATH = re.compile(
    r"(?<![\w./-])((?:scripts|tests|benchmarks|components|preflight|stack_config|node_marks_plugin|go_tools"
    r"|stacks|permissions)/[\w./<>*-]*\w|placement_check\.py|__main__\.py)"
)


def anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_lands_on_a_file_and_a_heading(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, fragment = target.partition("#")
        landing = (page.parent / path).resolve() if path else page
        if not landing.exists():
            broken.append(f"{target}: no such file")
        elif fragment and landing.suffix == ".md" and fragment not in anchors(landing):
            broken.append(f"{target}: no heading '{fragment}' in {landing.relative_to(ROOT)}")
    assert broken == [], f"{page.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_and_script_a_page_names_exists(page: Path) -> None:
    missing = set()
    for name in NAMED_PATH.findall(page.read_text()):
        if "<" in name or "*" in name:  # a pattern (`permissions/<stack>/`, `stacks/Pulumi.*.yaml`)
            continue
        # Files a user makes by following the docs, under names the docs give them.
        if re.search(r"Pulumi\.(shop-prod|my-stack|team-prod)\.yaml$", name):
            continue
        if not (ROOT / name).exists():
            missing.add(name)
    assert sorted(missing) == [], f"{page.relative_to(ROOT)} names files that do not exist"


def test_the_readme_leads_to_every_page_and_stays_short() -> None:
    readme = (ROOT / "README.md").read_text()
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in LINK.findall(readme)}
    unlinked = [p.name for p in PAGES if p.name != "README.md" and p.resolve() not in linked]
    assert unlinked == []
    assert len(readme.splitlines()) <= 220


@pytest.mark.parametrize(
    ("named", "command"),
    [
        ("scripts/preflight.sh", ["scripts/preflight.sh", "--help"]),
        ("scripts/node-marks.sh", ["scripts/node-marks.sh", "release", "--help"]),
        ("placement_check.py", [sys.executable, "placement_check.py", "--help"]),
        ("python -m stack_config.reference", [sys.executable, "-m", "stack_config.reference", "--check"]),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_the_projects_own_commands_in_the_docs_run(named: str, command: list[str]) -> None:
    assert any(named in page.read_text() for page in PAGES), f"no page shows {named}"
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
