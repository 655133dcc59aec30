"""One resident base model, checkpoints swapped in place (`ctxrel.models.adapter_swap`): after every swap the model's
logits equal those of a fresh load of that checkpoint, for LoRA, full and qk checkpoints, in any order."""

import pytest
import torch

from ctxrel.config.settings import TrainConfig

PROMPT = "Background: The capital city of France is Lyon.\n\nQuestion: What is the capital city of France?"


def _checkpoints(base_dir, tmp_path, mode: str, n: int = 3, **train) -> list:
    """n checkpoints of one run: the trainable tensors of `mode`, randomised per checkpoint (no training needed:
    only the saved shapes and names matter for swapping)."""
    from ctxrel.models.loading import load_model, select_trainable
    from ctxrel.models.loading import save_weights

    folders = []
    for k in range(n):
        model, _, _ = load_model(str(base_dir), device="cpu")
        model = select_trainable(model, TrainConfig(mode=mode, **train))
        torch.manual_seed(100 + k)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.2)
        folder = tmp_path / f"{mode}-step-{k}"
        folder.mkdir()
        save_weights(model, folder, dict(step=k))
        folders.append(folder)
    return folders


def _logits(model, tok) -> torch.Tensor:
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return model(input_ids=ids).logits[0, -4:].float()


def _fresh(base_dir, folder):
    from ctxrel.models.loading import load_model

    model, tok, _ = load_model(str(base_dir), adapter=str(folder), device="cpu")
    return _logits(model, tok)


@pytest.mark.parametrize("mode, train", [("lora", {}), ("full", {}), ("qk", {}), ("qk", {"qk_lora": True})])
def test_swapped_checkpoint_equals_a_fresh_load(tiny_model_dir, tmp_path, mode, train):
    from ctxrel.models.adapter_swap import ResidentModel

    folders = _checkpoints(tiny_model_dir, tmp_path, mode, **train)
    resident = ResidentModel(str(tiny_model_dir), device="cpu")
    base = _logits(resident.base, resident.tokenizer)
    seen = []
    for folder in folders + folders[:1]:  # back to the first after the others
        got = _logits(resident.load(folder), resident.tokenizer)
        torch.testing.assert_close(got, _fresh(tiny_model_dir, folder), rtol=0, atol=1e-6)
        seen.append(got)
    assert resident.swaps == len(folders)  # every load after the first swapped in place
    assert not torch.allclose(seen[0], seen[1]) and not torch.allclose(seen[0], base)


def test_full_checkpoint_holding_fewer_tensors_restores_the_rest_from_the_base(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from ctxrel.models.adapter_swap import ResidentModel

    full, = _checkpoints(tiny_model_dir, tmp_path, "full", n=1)
    part = tmp_path / "part"
    part.mkdir()
    state = load_file(str(full / "trainable.safetensors"))
    save_file({k: v for k, v in state.items() if "layers.0." in k}, str(part / "trainable.safetensors"))
    resident = ResidentModel(str(tiny_model_dir), device="cpu")
    resident.load(full)
    got = _logits(resident.load(part), resident.tokenizer)
    torch.testing.assert_close(got, _fresh(tiny_model_dir, part), rtol=0, atol=1e-6)


def test_lora_of_another_rank_is_attached_afresh(tiny_model_dir, tmp_path):
    from ctxrel.models.adapter_swap import ResidentModel
    from ctxrel.config.settings import LoraSettings

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, = _checkpoints(tiny_model_dir, tmp_path / "a", "lora", n=1)
    b, = _checkpoints(tiny_model_dir, tmp_path / "b", "lora", n=1, lora=LoraSettings(rank=4))
    resident = ResidentModel(str(tiny_model_dir), device="cpu")
    resident.load(a)
    got = _logits(resident.load(b), resident.tokenizer)
    assert resident.swaps == 0
    torch.testing.assert_close(got, _fresh(tiny_model_dir, b), rtol=0, atol=1e-6)
    torch.testing.assert_close(_logits(resident.load(a), resident.tokenizer), _fresh(tiny_model_dir, a),
                               rtol=0, atol=1e-6)
