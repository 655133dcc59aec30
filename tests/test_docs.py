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


# The key tables of the verb pages are generated from the config dataclasses (the same fields flags.py turns into
# flags), between `<!-- keys: VERB -->` and `<!-- /keys -->`. After adding or changing a key, rewrite them with
#     PYTHONPATH=src python tests/test_docs.py
KEY_PAGES = {"eval": "eval.md", "study": "study.md", "curate classify": "curate.md", "curate filter": "curate.md",
             "curate augment": "curate.md", "curate substitute": "curate.md", "curate pairs": "curate.md", "report": "report.md",
             "theory": "theory.md", "synth": "synth.md"}
NO_ALIASES = {"study"}  # cli.py adds the study's flags without short aliases
BLOCK = re.compile(r"(<!-- keys: (?P<verb>[a-z ]+) -->\n)(?P<body>.*?)(<!-- /keys -->)", re.S)


def key_table(verb: str) -> str:
    """The Markdown table of every key of `verb`'s config: key, flags, default, meaning (the field's comment)."""
    from ctxrel.config.settings import config_class
    from ctxrel.config.flags import _show, flag_name, leaves

    rows = ["| key | flag | default | meaning |", "|---|---|---|---|"]
    for leaf in leaves(config_class(verb)):
        flags = [flag_name(leaf.key), *(() if verb in NO_ALIASES else leaf.meta.get("flags", ()))]
        meaning = leaf.help or ""
        if leaf.meta.get("choices"):
            meaning = (meaning + "; " if meaning else "") + "one of " + ", ".join(f"`{c}`" for c in leaf.meta["choices"])
        cells = [f"`{leaf.key}`", ", ".join(f"`{f}`" for f in dict.fromkeys(flags)), f"`{_show(leaf.default)}`",
                 meaning.replace("|", "\\|")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def rewrite_key_tables(page: Path) -> str:
    return BLOCK.sub(lambda m: m.group(1) + key_table(m.group("verb")) + m.group(4), page.read_text())


@pytest.mark.parametrize("page", sorted(set(KEY_PAGES.values())))
def test_verb_pages_list_every_config_key(page):
    pytest.importorskip("torch")  # the synth and theory configs live next to their torch code
    path = ROOT / "docs" / page
    verbs = [m.group("verb") for m in BLOCK.finditer(path.read_text())]
    assert sorted(verbs) == sorted(v for v, p in KEY_PAGES.items() if p == page), f"key tables of {page}: {verbs}"
    assert rewrite_key_tables(path) == path.read_text(), (
        f"docs/{page}: a key table differs from the config; rewrite it with `PYTHONPATH=src python tests/test_docs.py`")


if __name__ == "__main__":
    for name in sorted(set(KEY_PAGES.values())):
        target = ROOT / "docs" / name
        target.write_text(rewrite_key_tables(target))
        print(f"rewrote the key tables of {target}")


def test_readme_is_a_short_manual_that_opens_with_the_two_setup_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 350, f"README.md has {len(lines)} lines; move details into docs/"
    assert lines[2].startswith("```") and lines[3].startswith("make demo") and lines[4].startswith("make test")


def test_design_page_copies_the_layers_of_the_layering_test():
    import importlib.util

    spec = importlib.util.spec_from_file_location("layering", ROOT / "tests" / "test_layering.py")
    layering = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layering)
    text = (ROOT / "docs" / "design.md").read_text().split("## Data flow and layers", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in text.splitlines() if line.startswith("| ") and "`" in line]
    page = [(name.strip(), tuple(re.findall(r"`([^`]+)`", mods))) for name, mods in rows]
    assert page == [(name, mods) for name, mods in layering.LAYERS], (
        "docs/design.md, 'Data flow and layers' no longer copies LAYERS of tests/test_layering.py (the authority)")
