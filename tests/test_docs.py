"""The documentation builds: the MkDocs site with --strict, and the README's links point at files that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_docs_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs site needs mkdocs (extra `docs` or `dev`)")
    pytest.importorskip("material", reason="the docs site needs mkdocs-material (extra `docs` or `dev`)")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                           "--site-dir", str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
    # every page under docs/ became a page of the site (strict mode already refuses one left out of the nav)
    for page in (ROOT / "docs").rglob("*.md"):
        rel = page.relative_to(ROOT / "docs").with_suffix("")
        built = tmp_path / "site" / ("index.html" if rel.name == "index" and rel.parent == Path(".") else
                                     rel.parent / ("" if rel.name == "index" else rel.name) / "index.html")
        assert built.is_file(), f"{page} was not built"


def test_readme_links_point_at_files_that_exist():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link and not link.startswith("mailto:")]
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_architecture_page_names_every_module_and_no_other():
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## The tree", 1)[1].split("```", 2)[1]
    listed, stack = set(), []
    for line in block.splitlines()[1:]:
        if not line.strip() or line.strip() == "src/ctxrel/":
            continue
        depth = (len(line) - len(line.lstrip())) // 2 - 1  # entries of src/ctxrel/ are indented by 2
        name = line.split()[0]
        del stack[depth:]
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
        elif name.endswith(".py"):
            listed.add("/".join([*stack, name]))
    package = ROOT / "src" / "ctxrel"
    actual = {p.relative_to(package).as_posix() for p in package.rglob("*.py")}
    assert not actual - listed, f"docs/architecture.md does not list: {sorted(actual - listed)}"
    assert not listed - actual, f"docs/architecture.md lists modules that do not exist: {sorted(listed - actual)}"
