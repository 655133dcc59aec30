import pytest

from ctxrel.config import settings as C
from ctxrel.core.errors import CtxrelError


def test_defaults_and_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("model:\n  batch_size: 4\neval:\n  benchmarks: [cf_capitals, memotrap]\n")
    cfg = C.load(y, ["eval.limit=7", "eval.temperature=1", "out=runs/x"])
    assert cfg.model.batch_size == 4 and cfg.model.name == "smollm2-135m-instruct"
    assert cfg.eval.benchmarks == ["cf_capitals", "memotrap"]
    assert cfg.eval.limit == 7 and cfg.eval.temperature == 1.0 and isinstance(cfg.eval.temperature, float)
    assert cfg.out == "runs/x"
    assert C.to_dict(cfg)["eval"]["limit"] == 7


@pytest.mark.parametrize("override, message", [
    ("eval.limt=5", "eval.limt; valid keys: eval.benchmarks"),
    ("modle.name=x", "unknown config key"),
    ("eval.samples=many", "eval.samples: expected int"),
    ("eval.mode=sample", "not one of generate, likelihood"),
    ("eval.limit", "expected KEY=VALUE"),
    ("eval.knowledge_filter=3", "expected bool"),
])
def test_bad_config_is_named(override, message):
    with pytest.raises(CtxrelError, match=message):
        C.load(None, [override])


def test_bad_yaml_names_the_file(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text("eval: [unclosed\n")
    with pytest.raises(CtxrelError, match="bad.yaml: invalid YAML"):
        C.load(y)
