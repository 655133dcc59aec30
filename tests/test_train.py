"""The training loop on a tiny random Llama: labels, schedules, trainable parameters, and the golden equivalences
(batch 4 = batch 1 x 4 accumulation; a resumed run = an uninterrupted one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ctxrel.config import settings as C  # noqa: E402
from ctxrel.core.errors import CtxrelError, InputError  # noqa: E402
from ctxrel.rundir.files import step_name  # noqa: E402
from ctxrel.train.data import IGNORE, Example, load_examples, render_segments, tokenize, to_example  # noqa: E402
from ctxrel.train.loop import lr_factor, make_plan, train  # noqa: E402

ALPACA = [{"instruction": f"Name city number {i}.", "input": "Paris Lyon" if i % 2 else "",
           "output": f"City {i} is Lyon."} for i in range(32)]


def write_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records))
    return path


def study_cfg(model_dir, tmp_path, **train) -> C.StudyConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_json(tmp_path / "alpaca.json", ALPACA)
    t = dict(mode="lora", lora=dict(rank=4, alpha=8, dropout=0.0), lr=1e-2, epochs=1, batch_size=4,
             tensorboard=False, warmup=0.0)
    t.update(train)
    return C.from_dict(C.StudyConfig, dict(
        model=dict(name=str(model_dir), device="cpu"), data=dict(source=str(data), max_length=48), train=t,
        eval=dict(every=100), out=str(tmp_path / "run")))


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


# -- data ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("template", ["alpaca", "tulu", "chat"])
def test_labels_cover_exactly_the_response(tok, template):
    ex = to_example(ALPACA[1], "alpaca", "x.json:1")
    t = tokenize([ex], tok, template=template, max_length=512)
    ids, labels = t.input_ids[0], t.labels[0]
    trained = [i for i, y in zip(ids, labels) if y != IGNORE]
    assert all(y in (IGNORE, i) for i, y in zip(ids, labels))
    text = tok.decode(trained)
    assert text.startswith("City 1 is Lyon.")  # the response and its end marker, nothing of the prompt
    assert "Name city" not in text and "Paris" not in text
    assert text.rstrip().endswith(("</s>", "<|im_end|>"))
    full = tok.decode(ids)
    assert full.index("Name city") < full.index("City 1 is Lyon.")


def test_chat_multi_turn_trains_every_assistant_turn(tok):
    ex = to_example({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Paris"},
                                  {"role": "user", "content": "And?"}, {"role": "assistant", "content": "Lyon"}]},
                    "chat", "c.jsonl:1")
    t = tokenize([ex], tok, template="chat", max_length=512)
    text = tok.decode([i for i, y in zip(t.input_ids[0], t.labels[0]) if y != IGNORE])
    assert "Paris" in text and "Lyon" in text and "Hi" not in text and "And?" not in text


def test_truncation_is_counted_and_empty_examples_dropped(tok):
    long = dict(instruction="Paris " * 200, input="", output="Lyon")
    short = tokenize([to_example(ALPACA[0], "alpaca", "f")], tok, template="alpaca", max_length=512)
    limit = len(short.input_ids[0]) + 2
    cut = dict(ALPACA[0], output="Lyon " * 50)
    t = tokenize([to_example(r, "alpaca", "f") for r in (ALPACA[0], long, cut)], tok, template="alpaca",
                 max_length=limit)
    assert t.stats["truncated"] == 1 and t.stats["dropped"] == 1 and len(t.input_ids) == 2
    assert len(t.input_ids[1]) == limit and t.labels[1][-1] != IGNORE  # cut inside the response: kept
    with pytest.raises(CtxrelError, match="max_length"):
        tokenize([to_example(long, "alpaca", "f")], tok, template="alpaca", max_length=limit)


def test_bad_records_name_file_line_and_key(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ALPACA[0]) + "\n" + json.dumps({"instruction": 3, "output": "x"}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:2 \[instruction\]"):
        load_examples(C.DataConfig(source=str(bad)))
    with pytest.raises(CtxrelError, match="no such file"):
        load_examples(C.DataConfig(source=str(tmp_path / "missing.json")))
    squad = write_json(tmp_path / "squad.json", [{"context": "Lyon is big.", "question": "Which city?",
                                                  "answers": {"text": ["Lyon"], "answer_start": [0]}}])
    ex = load_examples(C.DataConfig(source=str(squad)))[0]
    assert ex.messages[-1]["content"] == "Lyon" and "Background: Lyon is big." in ex.messages[0]["content"]


def test_source_path_expands_environment_variables(tmp_path, monkeypatch):
    """A preset can name `$CTXREL_DATA/...`; an unset variable is one sentence, not a literal `$` path."""
    write_json(tmp_path / "a.json", ALPACA)
    monkeypatch.setenv("CTXREL_DATA", str(tmp_path))
    assert len(load_examples(C.DataConfig(source="$CTXREL_DATA/a.json"))) == len(ALPACA)
    assert len(load_examples(C.DataConfig(source="${CTXREL_DATA}/a.json"))) == len(ALPACA)
    with pytest.raises(CtxrelError, match="no such file"):
        load_examples(C.DataConfig(source="$CTXREL_DATA/missing.json"))
    monkeypatch.delenv("CTXREL_DATA")
    with pytest.raises(CtxrelError, match=r"\$CTXREL_DATA is not set"):
        load_examples(C.DataConfig(source="$CTXREL_DATA/a.json"))


def test_hub_dataset_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CtxrelError, match="tatsu-lab/alpaca.*(datasets|offline)"):
        load_examples(C.DataConfig(source="tatsu-lab/alpaca"))


def test_alpaca_template_refuses_conversations():
    ex = Example([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                  {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}], source="t.jsonl:4")
    with pytest.raises(InputError, match="t.jsonl:4.*single-turn"):
        render_segments(ex, "alpaca", None, "</s>")


# -- schedule and plan -----------------------------------------------------------------------------------------

def test_lr_schedule_shapes():
    assert [round(lr_factor(s, 10, 2, "linear"), 3) for s in (0, 1, 2, 6, 9)] == [0.5, 1.0, 1.0, 0.5, 0.125]
    assert lr_factor(2, 10, 2, "cosine") == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_factor(9, 10, 0, "constant") == 1.0


def test_plan_checkpoints_and_errors():
    t, e = C.TrainConfig(batch_size=4, epochs=2), C.StudyEvalConfig(every=5, early=[1, 2])
    p = make_plan(20, t, e, world=1)
    assert (p.steps_per_epoch, p.total, p.checkpoints) == (5, 10, [0, 1, 2, 5, 10])
    assert p.epoch_boundaries() == [5]
    assert sorted(p.global_batch(0, 0) + p.global_batch(1, 0) + p.global_batch(2, 0) + p.global_batch(3, 0)
                  + p.global_batch(4, 0)) == list(range(20))  # an epoch sees every example once
    assert p.global_batch(5, 0) != p.global_batch(0, 0)  # reshuffled per epoch
    with pytest.raises(CtxrelError, match="multiple of the 3 process"):
        make_plan(20, t, e, world=3)
    with pytest.raises(CtxrelError, match="only 3 training examples"):
        make_plan(3, t, e, world=1)
    with pytest.raises(CtxrelError, match="micro_batch_size=3"):
        make_plan(20, C.TrainConfig(batch_size=4, micro_batch_size=3), e, world=1)


def test_bad_training_values_are_named_before_any_model_loads(tmp_path):
    from ctxrel.train.loop import check_train_config

    cfg = C.from_dict(C.StudyConfig, dict(train=dict(lr=-1, warmup=2, lora=dict(dropout=1.0)), data=dict(limit=0)))
    with pytest.raises(CtxrelError) as e:
        check_train_config(cfg)
    for key in ("train.lr=-1", "train.warmup=2", "train.lora.dropout=1.0", "data.limit=0"):
        assert key in str(e.value)
    check_train_config(C.StudyConfig())  # the defaults are valid


# -- trainable parameters --------------------------------------------------------------------------------------

def _snapshots(cfg):
    snaps = {}

    def grab(*, step, model, **_):
        snaps[step] = {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}

    cfg.eval.every = 1
    train(cfg, on_checkpoint=grab, log=lambda *a: None)
    return snaps


@pytest.mark.parametrize("mode,qk_lora", [("lora", False), ("full", False), ("qk", False), ("qk", True)])
def test_trainable_parameters_change_and_frozen_ones_do_not(tiny_model_dir, tmp_path, mode, qk_lora):
    # LoRA's B starts at zero, so A's gradient is zero on the first step: LoRA modes are checked after two steps
    steps = 2 if mode == "lora" or qk_lora else 1
    cfg = study_cfg(tiny_model_dir, tmp_path, mode=mode, qk_lora=qk_lora, max_steps=steps)
    snaps = _snapshots(cfg)
    before, after = snaps[0], snaps[steps]
    trainable = [n for n, (_, g) in after.items() if g]
    frozen = [n for n, (_, g) in after.items() if not g]
    assert trainable
    for n in trainable:
        assert not torch.equal(before[n][0], after[n][0]), f"{n} is trainable but did not change"
    for n in frozen:
        assert torch.equal(before[n][0], after[n][0]), f"{n} is frozen but changed"
    if mode == "qk":
        assert all(("q_proj" in n or "k_proj" in n) for n in trainable)
        if not qk_lora:
            assert len(trainable) == 4  # 2 layers x (q, k)
    if mode == "full":
        assert not frozen


# -- golden equivalences ---------------------------------------------------------------------------------------

def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines())]


def _adapter(run: Path, step: int) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoints" / step_name(step) / "adapter_model.safetensors"))


def test_batch_4_equals_batch_1_times_4_accumulation(tiny_model_dir, tmp_path):
    a = study_cfg(tiny_model_dir, tmp_path / "a", max_steps=6)
    b = study_cfg(tiny_model_dir, tmp_path / "b", max_steps=6, micro_batch_size=1)
    for cfg in (a, b):
        train(cfg, log=lambda *x: None)
    la, lb = _losses(Path(a.out)), _losses(Path(b.out))
    assert len(la) == 6 and la[-1] < la[0]
    assert lb == pytest.approx(la, rel=1e-5)
    wa, wb = _adapter(Path(a.out), 6), _adapter(Path(b.out), 6)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6)


def test_rerun_of_a_finished_run_trains_nothing(tiny_model_dir, tmp_path):
    cfg = study_cfg(tiny_model_dir, tmp_path, max_steps=3)
    train(cfg, log=lambda *x: None)
    seen = []
    train(cfg, on_checkpoint=lambda **kw: seen.append(kw["step"]), log=lambda *x: None)
    assert seen == [3] and len(_losses(Path(cfg.out))) == 3


def test_training_tokens_equal_whole_text_tokens_for_sentencepiece_style_tokenizers():
    """A Metaspace tokenizer marks the start of every call with a word-start piece; labels must still sit on the
    token stream that evaluation sees (the prompt tokenised whole)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    corpus = [r["instruction"] + " " + r["output"] for r in ALPACA] * 5 + ["### Instruction: ### Response:"]
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]))
    sp = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    for template in ("alpaca", "tulu"):
        ex = to_example(ALPACA[2], "alpaca", "x")
        t = tokenize([ex], sp, template=template, max_length=512)
        whole = "".join(text for text, _ in render_segments(ex, template, None, "</s>"))
        assert t.input_ids[0] == sp(whole)["input_ids"]
        trained = sp.decode([i for i, y in zip(t.input_ids[0], t.labels[0]) if y != IGNORE])
        assert trained.replace(" ", "").startswith("City2isLyon.") and "Name" not in trained


# -- length-grouped batching -----------------------------------------------------------------------------------

def _plans(n, lengths, **train):
    t, e = C.TrainConfig(**train), C.StudyEvalConfig(every=100)
    return (make_plan(n, t, e, world=1),
            make_plan(n, C.TrainConfig(**train, group_by_length=True), e, world=1, lengths=lengths))


def test_grouped_batches_cover_the_unsorted_epoch_once_deterministically():
    import random

    rng = random.Random(5)
    lengths = [rng.randint(10, 400) for _ in range(1003)]  # 1003 = 125 batches of 8 + 3 left out per epoch
    plain, grouped = _plans(len(lengths), lengths, batch_size=8, micro_batch_size=4, epochs=3)
    spe = plain.steps_per_epoch
    for epoch in range(3):
        steps = range(epoch * spe, (epoch + 1) * spe)
        g = [grouped.global_batch(s, 7) for s in steps]
        u = [plain.global_batch(s, 7) for s in steps]
        flat = [i for b in g for i in b]
        assert len(flat) == len(set(flat)) == spe * 8  # every example at most once, every batch full
        assert set(flat) == {i for b in u for i in b}  # the very examples unsorted batching trains on
        assert g != u
        pad_g, pad_u = (sum(p.padding(b, lengths) for b in bs) for p, bs in ((grouped, g), (plain, u)))
        assert pad_g < pad_u / 5  # grouping removes most padding
    # a pure function of (seed, step): a fresh plan asked at any step (a resumed run, another process) agrees
    _, again = _plans(len(lengths), lengths, batch_size=8, micro_batch_size=4, epochs=3)
    for s in (300, 5, 124, 125, 0):
        assert again.global_batch(s, 7) == grouped.global_batch(s, 7)
    assert grouped.global_batch(0, 8) != grouped.global_batch(0, 7)  # another seed, other batches
    assert grouped.global_batch(spe, 7) != grouped.global_batch(0, 7)  # regrouped per epoch
    with pytest.raises(CtxrelError, match="group_by_length"):
        make_plan(20, C.TrainConfig(group_by_length=True), C.StudyEvalConfig(), world=1)


def test_padding_counts_the_positions_collate_pads():
    from ctxrel.train.data import collate

    lengths = [3, 9, 4, 4, 7, 1, 2, 8]
    plain, _ = _plans(8, lengths, batch_size=8, micro_batch_size=2)
    batch = plain.global_batch(0, 0)
    seqs = [[1] * lengths[i] for i in batch]
    masks = [collate(seqs[k:k + 2], seqs[k:k + 2], 0)[1] for k in range(0, 8, 2)]
    assert plain.padding(batch, lengths) == sum(int((m == 0).sum()) for m in masks) > 0


def test_response_loss_of_a_batch_does_not_depend_on_its_padding(tiny_model_dir, tok):
    """Right padding: a sequence's summed loss is the same alone, in a batch padded to a longer neighbour, or
    padded far wider -- so grouping by length changes which examples meet, never what a batch's loss is."""
    from ctxrel.models.loading import load_model
    from ctxrel.train.data import collate
    from ctxrel.train.loop import ResponseLoss

    model, _, _ = load_model(str(tiny_model_dir), device="cpu")
    loss = ResponseLoss(model).eval()
    recs = [dict(instruction="Name a city" + " please" * k, input="", output="Lyon" + " and Paris" * (3 - k))
            for k in range(4)]
    t = tokenize([to_example(r, "alpaca", "x") for r in recs], tok, template="alpaca", max_length=512)
    assert len({len(x) for x in t.input_ids}) > 1
    pad = tok.pad_token_id

    def summed(ids, labels, extra=0):  # right-padded to the longest, plus `extra` more pad columns
        i, m, y = collate(ids, labels, pad)
        widen = torch.nn.functional.pad
        with torch.no_grad():
            return loss(widen(i, (0, extra), value=pad), widen(m, (0, extra)), widen(y, (0, extra), value=IGNORE)).item()

    alone = sum(summed([x], [y]) for x, y in zip(t.input_ids, t.labels))
    together = summed(t.input_ids, t.labels)
    wide = summed(t.input_ids, t.labels, extra=37)
    assert together == pytest.approx(alone, rel=1e-5) and wide == pytest.approx(alone, rel=1e-5)


VARIED = [{"instruction": f"Name city number {i}." + " Be brief." * (i % 5), "input": "",
           "output": "Lyon" + ", Paris" * (3 * (i % 7))} for i in range(32)]


def _varied_cfg(model_dir, tmp_path, **train):
    cfg = study_cfg(model_dir, tmp_path, **train)
    cfg.data.source = str(write_json(tmp_path / "varied.json", VARIED))
    cfg.data.max_length = 96
    return cfg


def test_grouped_training_has_the_loss_of_unsorted_training_on_the_same_examples(tiny_model_dir, tmp_path):
    """With a vanishing learning rate the model stays put, so one epoch's summed loss must be the same however
    the epoch is cut into batches; and the summary's padding must be what collate pads."""
    from ctxrel.train.data import collate, load_examples as load

    runs = {}
    for group in (False, True):
        cfg = _varied_cfg(tiny_model_dir, tmp_path / str(group), lr=1e-30, schedule="constant",
                          lora=dict(rank=4, alpha=8, dropout=0.0), micro_batch_size=2, group_by_length=group)
        summary = train(cfg, log=lambda *a: None)
        runs[group] = (cfg, summary, _losses(Path(cfg.out)))
    cfg = runs[True][0]
    t = tokenize(load(cfg.data, seed=0), tok_of(tiny_model_dir), template="chat", max_length=96)
    lengths = [len(x) for x in t.input_ids]
    totals = {}
    for group, (c, summary, losses) in runs.items():
        plan = make_plan(len(lengths), c.train, c.eval, 1, lengths)
        batches = [plan.global_batch(s, 0) for s in range(plan.total)]
        labels = [sum(y != IGNORE for i in b for y in t.labels[i][1:]) for b in batches]
        totals[group] = sum(l * n for l, n in zip(losses, labels))
        pads = sum(int((collate([t.input_ids[i] for i in b[k:k + 2]], [t.labels[i] for i in b[k:k + 2]], 0)[1]
                        == 0).sum()) for b in batches for k in range(0, len(b), 2))
        assert summary["pad_tokens"] == pads and summary["tokens"] == sum(lengths[i] for b in batches for i in b)
        assert summary["padding_share"] == pytest.approx(pads / (pads + summary["tokens"]), abs=1e-4)
        assert summary["tokens_per_s"] > 0 and summary["group_by_length"] is group
        assert json.loads((Path(c.out) / "train_summary.json").read_text())["pad_tokens"] == pads
    assert runs[True][1]["tokens"] == runs[False][1]["tokens"]
    assert runs[True][1]["pad_tokens"] < runs[False][1]["pad_tokens"] / 2
    assert runs[True][2] != pytest.approx(runs[False][2], rel=1e-3)  # the steps differ ...
    assert totals[True] == pytest.approx(totals[False], rel=1e-5)  # ... the epoch's loss does not


def tok_of(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def test_grouped_training_resumes_exactly(tiny_model_dir, tmp_path):
    kw = dict(schedule="constant", lora=dict(rank=4, alpha=8, dropout=0.0), group_by_length=True, epochs=2)
    ref = _varied_cfg(tiny_model_dir, tmp_path / "ref", max_steps=12, **kw)  # 8 steps per epoch
    ref.eval.every = 5
    train(ref, log=lambda *a: None)
    part = _varied_cfg(tiny_model_dir, tmp_path / "part", max_steps=5, **kw)
    part.eval.every = 5
    train(part, log=lambda *a: None)
    part.train.max_steps = 12  # the loop resumes from step 5, into the next epoch (the CLI would refuse the change)
    summary = train(part, log=lambda *a: None)
    assert _losses(Path(part.out)) == _losses(Path(ref.out)) and len(_losses(Path(ref.out))) == 12
    wa, wb = _adapter(Path(part.out), 12), _adapter(Path(ref.out), 12)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert summary["pad_tokens"] == json.loads((Path(ref.out) / "train_summary.json").read_text())["pad_tokens"]
