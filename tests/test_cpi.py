"""`--benchmark cpi:...`: the study's released files fetched from a source, verified against pins, cached, loaded
with their schema. The source here is a directory (or a local HTTP server) of small files written by the test,
pinned through $CTXREL_CPI_PINS; the real files are never used and the real pins are asserted unchanged."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading

import pytest

from ctxrel.benchmarks import cpi
from ctxrel.benchmarks.registry import describe, load_benchmark
from ctxrel.cli import main
from ctxrel.core.errors import CtxrelError

WORLD = [dict(context=f"The capital of Country{i} moved to Town{i}.", question=f"What is the capital of Country{i}?",
              answer=f"Town{i}", memory_answer=f"City{i}") for i in range(3)] + \
        [dict(context=f"River{i} now flows through Land{i}.", question=f"Where does River{i} flow?",
              answer=f"Land{i}", memory_answer=f"Home{i}") for i in range(2)]
BIOS = [dict(context=f"Person{i} was born in Place{i}.", question=f"Where was Person{i} born?", answer=f"Place{i}",
             parametric_answer=f"Real{i}") for i in range(4)]


def test_the_real_pins_are_the_released_files():
    assert cpi.REPOSITORY == "locuslab/context-parametric-inversion"
    assert cpi.COMMIT == "6f989849656f433d4520eaf0b9af6e3bb6a7ae70"
    assert {f: (p.sha256, p.records) for f, p in cpi.PINS.items()} == {
        "world_facts.json": ("a040ca190e4b3517474a229b9e97083df077aedce27bd92fb263018e00c1982c", 313),
        "country_capitals_only.json": ("c4c2b090a863bd4919df8c9b8a795dc1437611cc8d1a96b156710d15b33eee12", 196),
        "famous_biographies.jsonl": ("d08c6f1cc388d6271a2294d512ae8988937388e1e834461c02887c2684c3c071", 555)}


@pytest.fixture
def source(tmp_path, monkeypatch):
    """A directory of small files with the study's schema, their pins, and an empty cache."""
    src = tmp_path / "src"
    src.mkdir()
    files = {"world_facts.json": json.dumps(WORLD, indent=1).encode(),
             "country_capitals_only.json": json.dumps(WORLD[:3], indent=1).encode(),
             "famous_biographies.jsonl": "".join(json.dumps(b) + "\n" for b in BIOS).encode()}
    counts = {"world_facts.json": 5, "country_capitals_only.json": 3, "famous_biographies.jsonl": 4}
    for name, data in files.items():
        (src / name).write_bytes(data)
    pins = {f: dict(sha256=hashlib.sha256(d).hexdigest(), records=counts[f]) for f, d in files.items()}
    (tmp_path / "pins.json").write_text(json.dumps(pins))
    monkeypatch.setenv("CTXREL_CPI_SOURCE", str(src))
    monkeypatch.setenv("CTXREL_CPI_PINS", str(tmp_path / "pins.json"))
    monkeypatch.setenv("CTXREL_CACHE", str(tmp_path / "cache"))
    return src


def test_load_cache_and_schema(source, tmp_path):
    b = load_benchmark("cpi:world_facts")
    assert len(b.items) == 5 and b.name == "cpi:world_facts"
    it = b.items[0]
    assert (it.context_answer, it.parametric_answer, it.category) == ("Town0", "City0", "world_facts")
    cached = tmp_path / "cache" / "cpi" / hashlib.sha256((source / "world_facts.json").read_bytes()).hexdigest()[:16]
    assert (cached / "world_facts.json").read_bytes() == (source / "world_facts.json").read_bytes()
    assert b.source == str(cached / "world_facts.json")
    for f in source.iterdir():  # the source is gone: the cache serves
        f.unlink()
    assert len(load_benchmark("cpi:world_facts").items) == 5
    with pytest.raises(CtxrelError, match="no country_capitals_only.json there"):
        load_benchmark("cpi:capitals")  # never fetched: not cached


def test_biographies_and_the_capitals_split(source):
    bios = load_benchmark("cpi:biographies")
    assert [it.parametric_answer for it in bios.items] == ["Real0", "Real1", "Real2", "Real3"]
    caps = load_benchmark("cpi:capitals")
    other = load_benchmark("cpi:world_facts_other")
    assert [it.context_answer for it in caps.items] == ["Town0", "Town1", "Town2"]
    assert [it.context_answer for it in other.items] == ["Land0", "Land1"]
    assert {it.question for it in caps.items}.isdisjoint({it.question for it in other.items})
    assert cpi.overlap_warning(["cpi:capitals", "cpi:world_facts"]) and not cpi.overlap_warning(
        ["cpi:capitals", "cpi:world_facts_other"])


def test_world_facts_other_needs_the_capitals_prefix(source, tmp_path, monkeypatch):
    other = [WORLD[1], WORLD[0], WORLD[2]]  # same records, another order: not a prefix
    data = json.dumps(other).encode()
    (source / "country_capitals_only.json").write_bytes(data)
    pins = json.loads((tmp_path / "pins.json").read_text())
    pins["country_capitals_only.json"]["sha256"] = hashlib.sha256(data).hexdigest()
    (tmp_path / "pins.json").write_text(json.dumps(pins))
    with pytest.raises(CtxrelError, match="are not the capitals file"):
        load_benchmark("cpi:world_facts_other")


def test_a_corrupted_file_is_refused_and_never_cached(source, tmp_path, capsys):
    data = (source / "world_facts.json").read_bytes()
    (source / "world_facts.json").write_bytes(data.replace(b"Town1", b"Town7"))
    assert main(["eval", "--benchmark", "cpi:world_facts", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "is not the pinned" in err and "nothing was cached" in err and err.count("\n") == 1
    assert not list((tmp_path / "cache").rglob("world_facts.json")) and not (tmp_path / "run").exists()


def test_a_cached_file_that_changed_is_refused(source, tmp_path):
    path = cpi.fetch("famous_biographies.jsonl")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CtxrelError, match="differs from the pinned"):
        load_benchmark("cpi:biographies")


def test_offline_says_what_to_download_and_where(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CTXREL_CPI_SOURCE", raising=False)
    monkeypatch.delenv("CTXREL_CPI_PINS", raising=False)
    monkeypatch.setenv("CTXREL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["eval", "--benchmark", "cpi:capitals", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    want = f"{cpi.DEFAULT_SOURCE}/country_capitals_only.json"
    assert "HF_HUB_OFFLINE" in err and want in err and str(tmp_path / "cache" / "cpi" / "c4c2b090a863bd49") in err
    assert err.count("\n") == 1


class _Partial(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # announces the whole file, sends half of it, hangs up
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body[: len(self.body) // 2])

    def log_message(self, *a):
        pass


def test_a_partial_download_is_refused(source, tmp_path, monkeypatch):
    _Partial.body = (source / "famous_biographies.jsonl").read_bytes()
    server = http.server.HTTPServer(("127.0.0.1", 0), _Partial)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("CTXREL_CPI_SOURCE", f"http://127.0.0.1:{server.server_port}/repo")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        with pytest.raises(CtxrelError, match="partial"):
            load_benchmark("cpi:biographies")
    finally:
        server.shutdown()
    assert not list((tmp_path / "cache").rglob("famous_biographies.jsonl"))


def test_bad_pins_file_and_listing(source, tmp_path, monkeypatch):
    rows = {r["name"]: r for r in describe()}
    assert {"cpi:world_facts", "cpi:capitals", "cpi:world_facts_other", "cpi:biographies"} <= set(rows)
    (tmp_path / "pins.json").write_text('{"world_facts.json": {"sha256": "abc", "records": 1}}')
    with pytest.raises(CtxrelError, match="not 64 hex digits"):
        load_benchmark("cpi:world_facts")
    with pytest.raises(CtxrelError, match="takes no path"):
        load_benchmark("cpi:world_facts=/tmp/x.json")


@pytest.mark.integration
def test_eval_on_a_cpi_benchmark_warns_about_the_overlap(source, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["eval", "--model", str(tiny_model_dir), "--benchmark", "cpi:capitals", "--benchmark",
                 "cpi:world_facts", "--limit", "2", "--max-new-tokens", "3", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "not independent" in captured.err
    assert (out / "evals" / "model" / "cpi:capitals.jsonl").exists()
    assert "cpi:world_facts: 5 rows" in captured.out
