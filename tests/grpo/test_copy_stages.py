"""The stages that teach a model from scratch to copy: random-word copy pre-training and entity renaming."""

from __future__ import annotations

import re

import pytest
import torch

from drgym.agents.grpo.copy_pretrain import copy_pretrain
from drgym.agents.grpo.renaming import EntityRenamer
from drgym.llm.tiny import tiny_causal_lm
from drgym.llm.tiny_tokenizer import protocol_texts

PASSAGES = [
    f"{a} lies between {b} and {c}. The population of {a} is {n}."
    for a, b, c, n in [
        ("Musol", "Peigair", "Trouposund", "4512"),
        ("Peigair", "Musol", "Filukound", "96304"),
        ("Trouposund", "Sikraind", "Musol", "73512"),
        ("Filukound", "Peigair", "Sikraind", "8807"),
        ("Sikraind", "Trouposund", "Filukound", "76080"),
    ]
]


@pytest.fixture(scope="module")
def word_model():
    return tiny_causal_lm("word", seed=0, texts=[*PASSAGES, "What is the population of Musol?"], embedding_std=1.0)


def test_renaming_is_consistent_within_a_sequence_and_keeps_template_words(word_model):
    _, tok = word_model
    renamer = EntityRenamer.from_tokenizer(tok, PASSAGES, reserved=protocol_texts(), max_document_share=0.7, seed=1)
    text = "What is the population of Musol?" + PASSAGES[0] + PASSAGES[1]
    ids = tok(text)["input_ids"]
    out = renamer(ids)
    before, after = tok.convert_ids_to_tokens(ids), tok.convert_ids_to_tokens(out)
    mapping = {}
    for b, a in zip(before, after):
        if b != a:
            assert mapping.setdefault(b, a) == a  # one replacement per word, wherever it stands
            assert b.isdigit() == a.isdigit()  # numbers become numbers, names names
    assert {"Musol", "Peigair", "4512", "96304"} <= set(mapping)
    assert len(set(mapping.values())) == len(mapping)  # two words never merge into one
    for word in ("population", "lies", "between", "What", "is", " ", "."):
        assert word not in mapping  # template and protocol words stay
    assert renamer(ids) != out  # a fresh renaming every call


def test_renamer_draws_fresh_replacements_from_the_training_entities(word_model):
    _, tok = word_model
    renamer = EntityRenamer.from_tokenizer(tok, PASSAGES, reserved=protocol_texts(), max_document_share=0.7, seed=0)
    names, numbers = renamer.size
    assert names >= 5 and numbers == 5
    ids = tok(PASSAGES[2])["input_ids"]
    seen = {tuple(renamer(ids)) for _ in range(20)}
    assert len(seen) > 10


def test_copy_pretraining_trains_and_reports(word_model):
    model, tok = word_model
    model = type(model)(model.config)
    model.load_state_dict(word_model[0].state_dict())
    model.get_input_embeddings().weight.requires_grad_(False)
    words = [i for i, w in enumerate(tok.convert_ids_to_tokens(list(range(len(tok))))) if re.fullmatch(r"\w+", w)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    metrics = copy_pretrain(model, words, steps=3, batch_size=4, length=8, learning_rate=1e-3, seed=0)
    assert set(metrics) == {
        "copy_pretrain/loss_first", "copy_pretrain/loss_last10", "copy_pretrain/accuracy_last10",
        "copy_pretrain/steps", "copy_pretrain/seconds",
    }
    assert metrics["copy_pretrain/steps"] == 3
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and "model.embed_tokens.weight" not in changed  # frozen embeddings stay frozen


def test_copy_pretraining_needs_words(word_model):
    with pytest.raises(ValueError, match="at least 2 words"):
        copy_pretrain(word_model[0], [5], steps=1, batch_size=1, length=4, learning_rate=1e-3, seed=0)


def test_variable_copy_batches_put_the_repeat_at_no_fixed_offset():
    from drgym.agents.grpo.copy_pretrain import _copy_batch

    pool, gen = torch.arange(100, 200), torch.Generator().manual_seed(0)
    fixed, start = _copy_batch(pool, gen, 4, 8, None)
    assert start == 8 and torch.equal(fixed[:, :8], fixed[:, 8:])
    starts, lengths = set(), set()
    for _ in range(50):
        ids, start = _copy_batch(pool, gen, 4, 8, 3)
        n = ids.shape[1] - start  # the repeat's length
        assert 3 <= n <= 8 and 0 <= start - n <= 4  # a lead-in of at most length // 2 ids
        assert torch.equal(ids[:, start - n : start], ids[:, start:])
        starts.add(start)
        lengths.add(n)
    assert len(starts) > 4 and len(lengths) > 3  # the offset changes from step to step


def test_variable_copy_pretraining_trains_and_checks_its_range(word_model):
    model, tok = word_model
    model = type(model)(model.config)
    words = [i for i, w in enumerate(tok.convert_ids_to_tokens(list(range(len(tok))))) if re.fullmatch(r"\w+", w)]
    metrics = copy_pretrain(model, words, steps=3, batch_size=4, length=8, learning_rate=1e-3, seed=0, min_length=4)
    assert torch.isfinite(torch.tensor(metrics["copy_pretrain/loss_last10"]))
    for bad in (1, 9):
        with pytest.raises(ValueError, match="min_length must be in"):
            copy_pretrain(model, words, steps=1, batch_size=1, length=8, learning_rate=1e-3, seed=0, min_length=bad)


def test_copy_pretraining_stops_once_it_copies(word_model):
    model, tok = word_model
    words = [i for i, w in enumerate(tok.convert_ids_to_tokens(list(range(len(tok))))) if re.fullmatch(r"\w+", w)]
    kwargs = {"steps": 600, "batch_size": 16, "length": 8, "learning_rate": 3e-3, "seed": 0}
    fresh = type(model)(model.config)
    fresh.load_state_dict(model.state_dict())
    stopped = copy_pretrain(fresh, words, stop_accuracy=0.6, **kwargs)
    # the fixed shape is learnt fast: the stage ends at the first 10 steps averaging 0.6, well before 600
    assert 10 <= stopped["copy_pretrain/steps"] < 600
    assert stopped["copy_pretrain/accuracy_last10"] >= 0.6
    fresh.load_state_dict(model.state_dict())
    unreachable = copy_pretrain(fresh, words, stop_accuracy=1.0, **{**kwargs, "steps": 30})
    assert unreachable["copy_pretrain/steps"] == 30  # a ceiling, not a target: the steps run out first
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="stop_accuracy must be in"):
            copy_pretrain(fresh, words, stop_accuracy=bad, **kwargs)


@pytest.mark.parametrize(
    ("bad", "why"), [(0, "must be in (0, 1], got 0"), (2.0, "must be in (0, 1], got 2.0"), (True, "must be float")]
)
def test_the_copy_stop_accuracy_is_checked_by_the_config(tmp_path, bad, why):
    from drgym.errors import ConfigError
    from tests.grpo.conftest import tiny_config

    with pytest.raises(ConfigError, match=re.escape(f"`copy_pretrain_stop_accuracy` {why}")):
        tiny_config(tmp_path, copy_pretrain_stop_accuracy=bad)


def test_the_copy_pretraining_length_range_is_checked_by_the_config(tmp_path):
    from drgym.errors import ConfigError
    from tests.grpo.conftest import tiny_config

    with pytest.raises(ConfigError, match="copy_pretrain_min_length"):
        tiny_config(tmp_path, copy_pretrain_length=8, copy_pretrain_min_length=12)


def test_the_trainer_runs_copy_pretraining_then_a_renamed_warm_start(tmp_path):
    from drgym.agents.grpo.train import make_trainer
    from tests.grpo.conftest import tiny_config

    cfg = tiny_config(
        tmp_path, tiny_vocab="word", freeze_embeddings=True, tiny_config={"embedding_std": 1.0},
        synthetic_kinds=["population"], synthetic_neighbours=True, num_train_questions=8, num_eval_questions=4,
        copy_pretrain_steps=2, copy_pretrain_length=8, copy_pretrain_min_length=4, copy_pretrain_batch_size=4,
        warmstart_steps=2, warmstart_episodes=12, warmstart_min_reward=0.0, warmstart_rename_entities=True,
        warmstart_agent_kwargs={"pages_to_read": 0, "named_result_only": True, "quote_evidence": True},
    )
    _, callback = make_trainer(cfg)
    assert callback.warm["copy_pretrain/loss_last10"] > 0 and callback.warm["warmstart/demonstrations"] > 0
    assert callback.warm["warmstart/episodes"] == 12  # 8 questions: one pass, then 4 of them again
    assert (tmp_path / "run" / "warmstart" / "model").is_dir()  # RL and its reference start from both stages


def test_training_passages_leave_out_the_held_out_questions_passages():
    from drgym.agents.grpo.config import GRPOConfig
    from drgym.agents.grpo.rollout import build_task

    cfg = GRPOConfig.from_dict({
        "dataset": "synthetic", "synthetic_kinds": ["population"], "synthetic_neighbours": True,
        "num_train_questions": 20, "num_eval_questions": 6, "output_dir": "unused",
    })
    task = build_task(cfg)
    held = [task.records[i].question.removeprefix("What is the population of ").removesuffix("?")
            for i in task.eval_indices]
    assert task.train_passages and not any(name in p for p in task.train_passages for name in held)
    assert len(task.train_passages) >= 20  # the training rings


def test_renaming_needs_the_word_tokenizer():
    from drgym.agents.grpo.config import GRPOConfig
    from drgym.errors import ConfigError

    with pytest.raises(ConfigError, match="`warmstart_rename_entities` renames word ids"):
        GRPOConfig.from_dict({"warmstart_rename_entities": True, "tiny_vocab": "byt5", "output_dir": "x"})
