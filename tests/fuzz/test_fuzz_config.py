"""Fuzzing configs (ctxrel.config.settings, ctxrel.config.shipped): YAML files of every verb's dataclass and KEY=VALUE
overrides. A config either builds -- and then holds every value it was given, typed -- or is refused in one
sentence naming the file or the key; never a traceback."""

from __future__ import annotations

import tempfile
import typing
from pathlib import Path

import pytest
import yaml

pytest.importorskip("hypothesis")
from hypothesis import example, given, strategies as st  # noqa: E402

from fuzzkit import TEXT, mutated, one_sentence, outcome  # noqa: E402

from ctxrel.config.settings import RunConfig, StudyConfig, load_config, set_key  # noqa: E402
from ctxrel.config.flags import leaves  # noqa: E402
from ctxrel.config.shipped import PRESETS_DIR  # noqa: E402
from ctxrel.report.cli import ReportConfig  # noqa: E402

CLASSES = {"study": StudyConfig, "eval": RunConfig, "report": ReportConfig}
KEYS = {verb: [leaf.key for leaf in leaves(cls)] for verb, cls in CLASSES.items()}
ALL_KEYS = sorted({k for ks in KEYS.values() for k in ks})
SECTIONS = sorted({k.rsplit(".", 1)[0] for k in ALL_KEYS if "." in k})

YAML_SCALARS = (st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | TEXT
                | st.sampled_from(["1e-4", ".inf", "-.nan", "0x1F", "1_000", "~", "yes", "[a", "{", "!!python/none"]))
YAML_VALUES = st.recursive(YAML_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
KEY = st.sampled_from(ALL_KEYS) | st.sampled_from(SECTIONS) | st.text(max_size=12)


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _leaf_types(cls) -> dict[str, object]:
    return {leaf.key: leaf.type for leaf in leaves(cls)}


def _plain(value, tp) -> bool:
    """Is `value` already of the exact type the key takes (so the built config must hold it unchanged)?"""
    if tp is int:
        return type(value) is int
    if tp is str:
        return type(value) is str
    if tp is bool:
        return type(value) is bool
    return False


@given(verb=st.sampled_from(sorted(CLASSES)),
       entries=st.lists(st.tuples(KEY, YAML_VALUES), max_size=5),
       odd_keys=st.dictionaries(st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False), YAML_SCALARS,
                                max_size=2))
@example(verb="study", entries=[], odd_keys={1: 2})
@example(verb="study", entries=[("train", {"1": 2})], odd_keys={})
@example(verb="eval", entries=[], odd_keys={None: 1, True: 2})
@example(verb="eval", entries=[("\n", None)], odd_keys={})  # was: an error message of two lines
def test_yaml_config_files(verb, entries, odd_keys):
    """Nested mappings of real keys, sections and junk keys (non-string YAML keys too), dumped as YAML."""
    data: dict = {}
    for key, value in entries:
        try:
            set_key(data, key, value)
        except Exception:  # a drawn key runs into a scalar drawn before it: keep the earlier one
            continue
    data.update(odd_keys)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
        cfg, err = outcome(lambda: load_config(CLASSES[verb], path, verb=verb))
    if err is not None:
        one_sentence(err)
        return
    types = _leaf_types(CLASSES[verb])
    for key, tp in types.items():  # every plain value given lands on its key
        node = data
        for part in key.split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is not KeyError and _plain(node, tp):
            assert _get(cfg, key) == node, key


@given(name=st.sampled_from(["quickstart.yaml", "eval/quick.yaml"] if (PRESETS_DIR / "eval" / "quick.yaml").exists()
                            else ["quickstart.yaml"]), data=st.data())
def test_damaged_yaml_files(name, data):
    """A shipped preset's text damaged: a config, or one sentence naming the file."""
    raw = (PRESETS_DIR / name).read_bytes()
    damaged = data.draw(mutated(raw))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_bytes(damaged)
        cfg, err = outcome(lambda: load_config(StudyConfig, path, verb="study"))
    if err is not None:
        one_sentence(err)


VALUE_TEXT = st.sampled_from(["3", "0", "-1", "1e-4", "nan", ".inf", "true", "null", "[a, b]", "{a: 1}", "[",
                              "'x", "!!python/object:os.system", "&a [*a]", "", " ", "a=b", "10**9"]) | TEXT


@given(verb=st.sampled_from(sorted(CLASSES)),
       overrides=st.lists(st.tuples(KEY, VALUE_TEXT).map(lambda kv: f"{kv[0]}={kv[1]}")
                          | st.text(max_size=10), max_size=4))
@example(verb="study", overrides=["=3"])
@example(verb="study", overrides=["train=3", "train.lr=1"])
@example(verb="study", overrides=["eval.limit=1e400"])
@example(verb="report", overrides=["runs=[a, 1]"])
def test_key_value_overrides(verb, overrides):
    cfg, err = outcome(lambda: load_config(CLASSES[verb], None, overrides, verb=verb))
    if err is not None:
        one_sentence(err)
        return
    types = _leaf_types(CLASSES[verb])
    final = {}
    for o in overrides:
        key, _, raw = o.partition("=")
        final[key.strip()] = raw
    for key, raw in final.items():
        if key in types:
            value = yaml.safe_load(raw) if raw.strip() else ""
            if _plain(value, types[key]):
                assert _get(cfg, key) == value, (key, raw)
