"""The speed and parity scripts (perf/) stay runnable: each is run end to end on a tiny model, on CPU, in seconds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_gpu_check_tiny_runs_every_measure_on_cpu():
    # the test runner path on a file without gpu tests (collection only, fast); CI runs it on CPU
    out = run("perf/gpu_check.py", "--tiny", "--tests", "tests/test_perf.py")
    assert re.search(r"gpu tests \(tests/test_perf.py\): .*deselected", out)
    for measure, unit in [("generate, greedy, 32 new tokens", "items/s"), ("likelihood, 2 answers per item",
                                                                           "items/s"),
                          ("LoRA r128 step", "tokens/s"), ("adapter swap", "ms")]:
        line = next((ln for ln in out.splitlines() if ln.startswith(measure)), None)
        assert line is not None, f"no {measure!r} row in:\n{out}"
        value = float(re.search(r"([\d.]+) " + unit, line).group(1))
        assert value > 0, line
    assert "MFU not computed" in out  # no peak for a CPU


def test_gpu_check_knows_the_peaks_it_claims():
    sys.path.insert(0, str(ROOT / "perf"))
    try:
        from gpu_check import peak_tflops
    finally:
        sys.path.pop(0)
    assert peak_tflops("NVIDIA H100 80GB HBM3") == peak_tflops("NVIDIA H200") == 989
    assert peak_tflops("NVIDIA H100 PCIe") == 756 and peak_tflops("NVIDIA H100 NVL") == 835
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312
    assert peak_tflops("NVIDIA L4") == 121 and peak_tflops("NVIDIA L40S") == 362
    assert peak_tflops("Tesla V100-SXM2-16GB") is None  # unknown: the script says so instead of guessing


def test_grouped_batching_benchmark_runs_on_a_tiny_model(tiny_model_dir):
    out = run("perf/train_overhead.py", "--group-by-length", "--model", str(tiny_model_dir), "--steps", "2",
              "--pool", "200")
    unsorted = float(re.search(r"unsorted: .*?(\d+) real tokens/s", out).group(1))
    assert unsorted > 0 and re.search(r"speed-up ratio \(grouped / unsorted tokens/s, same 16 examples\): "
                                      r"[\d.]+x", out), out
    share = {m: float(x) for m, x in re.findall(r"epoch of \d+ steps, (\w+) *: padding +([\d.]+)%", out)}
    assert share["grouped"] < share["unsorted"]
