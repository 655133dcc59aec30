"""One config path for every verb (issue 14, items 1 and 5): `--config FILE key=value` gives the same config as
the flags, presets list and show (and what `show` prints loads back to the same config), every leaf key has a
derived flag, and there is one copy of the shipped configs. Parsing only: no model is built."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ctxrel.config import shipped as P
from ctxrel.config.flags import resolved_yaml
from ctxrel.cli import build_parser, main, parse_args
from ctxrel.config.settings import VERBS, config_class
from ctxrel.core.errors import CtxrelError
from ctxrel.config.flags import flag_name, from_args, leaves, scalar

ROOT = Path(__file__).resolve().parent.parent


def resolved(argv: list[str]):
    """The config a command line resolves to, through the CLI's own parser and loader."""
    return dataclasses.asdict(from_args(parse_args(argv)))


def write(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


# verb argv with flags  |  the same settings as a config file  |  the KEY=VALUE given to both
CASES = {
    "eval": (["eval", "--model", "m", "--limit", "5", "--template", "alpaca", "--no-knowledge-filter",
              "--benchmark", "a", "--benchmark", "b=x.jsonl", "--instruct", "--out", "o", "--eval.decoding", "cad"],
             {"model": {"name": "m"}, "eval": {"limit": 5, "template": "alpaca", "knowledge_filter": False,
                                               "benchmarks": ["a", "b=x.jsonl"], "instruct": True,
                                               "decoding": ["cad"]}, "out": "o"},
             ["eval.seed=3", "model.batch_size=2"]),
    "study": (["study", "quickstart", "--train.lr", "1e-5", "--eval.limit", "10", "--out", "runs/x",
               "--data.mixture.n", "64"],
              {"base": "quickstart", "train": {"lr": 1e-5}, "eval": {"limit": 10}, "out": "runs/x",
               "data": {"mixture": {"n": 64}}},
              ["train.max_steps=4"]),
    "train": (["train", "--config", "quickstart", "--train.mode", "qk", "--no-train.keep-weights"],
              {"base": "quickstart", "train": {"mode": "qk", "keep_weights": False}}, ["eval.every=2"]),
    "curate classify": (["curate", "classify", "--data", "mixture", "--out", "c", "--limit", "12",
                         "--threshold", "1.5", "--max-length", "64", "--no-progress", "--template", "alpaca"],
                        {"data": "mixture", "out": "c", "limit": 12, "threshold": 1.5, "max_length": 64,
                         "progress": False, "template": "alpaca"}, ["seed=2"]),
    "curate filter": (["curate", "filter", "--data", "d.jsonl", "--out", "f", "--keep", "context-critical",
                       "--drop-threshold", "0.5", "--drop-keywords", "countries-capitals", "--ignore-case"],
                      {"data": "d.jsonl", "out": "f", "keep": "context-critical", "drop_threshold": 0.5,
                       "drop_keywords": "countries-capitals", "ignore_case": True}, ["split=validation"]),
    "curate augment": (["curate", "augment", "--data", "d.jsonl", "--out", "a", "--counterfactual", "facts",
                        "--ratio", "0.5"],
                       {"data": "d.jsonl", "out": "a", "counterfactual": "facts", "ratio": 0.5}, ["limit=30"]),
    "curate substitute": (["curate", "substitute", "--text", "t.txt", "--entity", "A B", "--with", "C D",
                           "--protect", "A B Street", "--protect", "B Hall"],
                          {"text": "t.txt", "entity": "A B", "replacement": "C D",
                           "protect": ["A B Street", "B Hall"]}, ["out=new.txt"]),
    "report": (["report", "runs/a", "runs/b", "--labels", "x,y", "--from", "start", "--to", "48", "--smooth", "3"],
               {"runs": ["runs/a", "runs/b"], "labels": "x,y", "flips_from": "start", "flips_to": "48",
                "smooth": 3}, ["bootstrap=200"]),
    "theory": (["theory", "--preset", "prop2", "--steps", "4", "--lr", "5"],
               {"base": "prop2", "steps": 4, "lr": 5.0}, ["seed=1"]),
    "synth": (["synth", "--preset", "quick", "--finetune.steps", "20", "--seed", "3", "--no-finetune.drop-cs"],
              {"base": "quick", "finetune": {"steps": 20, "drop_cs": False}, "seed": 3}, ["eval.every=5"]),
}


@pytest.mark.parametrize("verb", sorted(CASES))
def test_config_file_and_flags_give_the_same_config(verb, tmp_path):
    if verb in ("theory", "synth"):
        pytest.importorskip("torch")
    argv, data, overrides = CASES[verb]
    by_flags = resolved(argv + overrides)
    words = verb.split()
    by_file = resolved(words + ["--config", write(tmp_path / "c.yaml", data)] + overrides)
    assert by_flags == by_file
    default = dataclasses.asdict(config_class(verb)())
    assert by_flags != default  # the settings took effect
    for o in overrides:  # and KEY=VALUE did too
        key, value = o.split("=", 1)
        node = by_flags
        for part in key.split("."):
            node = node[part]
        assert str(node) == value or node == yaml.safe_load(value)


def test_flags_win_over_key_value_and_the_file(tmp_path):
    cfg = resolved(["eval", "--config", write(tmp_path / "c.yaml", {"eval": {"limit": 3}}), "eval.limit=4",
                    "--limit", "5"])
    assert cfg["eval"]["limit"] == 5
    assert resolved(["eval", "--config", str(tmp_path / "c.yaml"), "eval.limit=4"])["eval"]["limit"] == 4


def test_a_user_file_may_name_a_preset_base_and_a_file_base(tmp_path):
    mine = write(tmp_path / "mine.yaml", {"base": "quickstart", "train": {"lr": 2e-4}})
    child = write(tmp_path / "child.yaml", {"base": "mine.yaml", "out": "runs/child"})
    cfg = resolved(["study", child])
    assert cfg["train"]["lr"] == 2e-4 and cfg["out"] == "runs/child" and cfg["train"]["max_steps"] == 48
    write(tmp_path / "loop.yaml", {"base": "loop.yaml"})
    with pytest.raises(CtxrelError, match="loop.yaml: `base` chain loops"):
        resolved(["study", str(tmp_path / "loop.yaml")])


def test_every_leaf_key_has_a_derived_flag():
    """No flag table is kept by hand: each verb's parser has `--KEY` for every leaf key of its dataclass."""
    for verb in VERBS:
        if verb in ("theory", "synth"):
            pytest.importorskip("torch")
        parser = build_parser(verb.split()[0])
        sub = next(a for a in parser._actions if a.dest == "verb").choices[verb.split()[0]]
        if " " in verb:
            sub = next(a for a in sub._actions if a.dest == "curate_verb").choices[verb.split()[1]]
        options = {s for a in sub._actions for s in a.option_strings}
        for leaf in leaves(config_class(verb)):
            assert flag_name(leaf.key) in options, (verb, leaf.key)
            assert leaf.help, f"{verb}: key {leaf.key} has no help (a comment next to the field)"
    assert "_FLAG_KEYS" not in (ROOT / "src" / "ctxrel" / "cli.py").read_text()


def test_help_lists_every_key_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    assert "--eval.max-new-tokens N, --max-new-tokens N" in text and "(default: 32)" in text
    assert "--eval.cad-alpha" in text and "--no-knowledge-filter" in text
    with pytest.raises(SystemExit):
        main(["curate", "classify", "--help"])
    text = capsys.readouterr().out
    assert "--threshold-quantile" in text and "(default: 0.25)" in text and "--no-progress" in text


def test_one_definition_of_the_template_choices():
    hits = [p for p in (ROOT / "src" / "ctxrel").rglob("*.py") if '"alpaca", "tulu"' in p.read_text()]
    assert [p.name for p in hits] == ["prompts.py"]


def test_presets_list_and_show(tmp_path, capsys):
    assert main(["presets"]) == 0
    text = capsys.readouterr().out
    for name in ("quickstart", "paper/llama2-7b-alpaca-lora", "synth/quick", "theory/prop1"):
        assert name in text
    assert main(["presets", "show", "quickstart"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("# quickstart:") and "train:" in shown and "micro_batch_size" in shown  # every key
    mine = tmp_path / "my.yaml"
    mine.write_text(shown)
    from ctxrel.config import load_study_config

    assert load_study_config(str(mine)) == load_study_config("quickstart")
    assert main(["presets", "show", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("name", P.names())
def test_every_preset_shows_and_loads_back(name, tmp_path):
    verb = P.verb_of(name)
    if verb in ("theory", "synth"):
        pytest.importorskip("torch")
    from ctxrel.config.settings import load_config

    path = tmp_path / "shown.yaml"
    path.write_text(resolved_yaml(name))
    cls = config_class(verb)
    assert load_config(cls, path, verb=verb) == load_config(cls, name, verb=verb)


def test_bad_source_and_stray_argument_are_one_sentence(tmp_path, capsys):
    assert main(["eval", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err
    assert main(["eval", "limit"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["study", "quickstart", "quickstart"]) == 2
    assert "one config" in capsys.readouterr().err
    assert main(["curate", "augment", "--data", "mixture"]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "--counterfactual" in err
    assert main(["report"]) == 2
    assert "RUN" in capsys.readouterr().err


def test_one_copy_of_the_shipped_configs():
    assert not (ROOT / "configs").exists()
    assert (P.PRESETS_DIR / "quickstart.yaml").is_file() and P.PRESETS_DIR.parent.name == "ctxrel"
    assert "ctxrel presets show" in (ROOT / "README.md").read_text()


def test_help_is_instant_without_torch():
    code = ("import sys\nfrom ctxrel.cli import main\n"
            "for argv in (['--help'], ['eval', '--help'], ['study', '--help'], ['curate', 'filter', '--help'],"
            " ['report', '--help'], ['presets']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stderr


def test_scalar_types():
    assert scalar(int | None) == (int, False) and scalar(list[float]) == (float, True)
    assert scalar(dict[str, dict]) == (None, False)
