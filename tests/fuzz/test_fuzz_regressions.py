"""Every failing example the fuzz suite found, kept as a plain test (docs/robustness.md lists the bugs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctxrel.config import DataConfig, StudyConfig, load_config
from ctxrel.errors import CtxrelError
from ctxrel.train.data import load_examples


def _refused(fn, *names) -> str:
    with pytest.raises(CtxrelError) as e:
        fn()
    text = str(e.value)
    assert "\n" not in text and all(str(n) in text for n in names), text
    return text


@pytest.mark.parametrize("records", [[1, 2], [None], [[1]]])
def test_data_file_of_non_objects_is_refused_naming_the_record(tmp_path, records):
    """was: TypeError "argument of type 'int' is not iterable" from the format sniffer."""
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    _refused(lambda: load_examples(DataConfig(source=str(path))), path, "expected a JSON object")


def test_data_file_of_strings_is_refused_not_sniffed_letter_by_letter(tmp_path):
    """was: "cannot tell the format of a record with keys ['e', 't', 't', 'x']" (a string's letters as keys)."""
    path = tmp_path / "d.jsonl"
    path.write_text('"text"\n')
    _refused(lambda: load_examples(DataConfig(source=str(path))), f"{path}:1", "a string")


def test_unknown_record_format_names_file_and_line(tmp_path):
    """was: the sniffer's refusal named neither the file nor the record."""
    path = tmp_path / "d.jsonl"
    path.write_text('{"hnstruction": "Name a city.", "input": "", "output": "Lyon"}\n')
    _refused(lambda: load_examples(DataConfig(source=str(path))), f"{path}:1", "hnstruction")


@pytest.mark.parametrize("text", ["1: 2\nb: 3\n", "train:\n  1: 2\n", "~: 1\ntrue: 2\n"])
def test_config_with_non_string_keys_is_refused_in_one_sentence(tmp_path, text):
    """was: TypeError from sorting int/str (or None/bool) keys, or from "section." + 1."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    _refused(lambda: load_config(StudyConfig, path), "is not a name", "valid keys")
