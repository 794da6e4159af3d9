"""Reference log-probs kept across trainings: only pairs not seen under the same reference are computed."""

import logging
import os
import time

from roleforge.training.reference_store import KEEP_DAYS, ReferenceStore, files_identity, reference_identity

PREFIX = [1, 2, 3]


def example(index: int) -> dict:
    return {"index": index, "prompt_ids": [10, index], "chosen_ids": [20 + index, 2], "rejected_ids": [30, index, 2]}


class Reference:
    """A stand-in for the reference pass: a value per pair from its token ids, and the pairs it was asked for."""

    def __init__(self, shift: float = 0.0) -> None:
        self.asked: list[list[int]] = []
        self.shift = shift

    def __call__(self, examples: list[dict]) -> list[tuple[float, float]]:
        self.asked.append([e["index"] for e in examples])
        return [(-sum(e["chosen_ids"]) + self.shift, -sum(e["rejected_ids"]) + self.shift) for e in examples]


def test_a_later_training_computes_only_the_pairs_not_seen_before(tmp_path):
    store, first, later = ReferenceStore(tmp_path / "ref.db"), Reference(), Reference()
    night_one = [example(i) for i in range(5)]
    values = store.reference("base", PREFIX, night_one, first)
    assert first.asked == [[0, 1, 2, 3, 4]] and values == first(night_one)
    night_two = [example(i) for i in (3, 7, 0, 8)]  # two old pairs, two new, in another order
    values = store.reference("base", PREFIX, night_two, later)
    assert later.asked == [[7, 8]]
    assert values == Reference()(night_two), "each value comes back in the place of its pair"


def test_another_reference_or_prefix_computes_every_pair_again(tmp_path):
    store, pairs = ReferenceStore(tmp_path / "ref.db"), [example(i) for i in range(3)]
    store.reference("base", PREFIX, pairs, Reference())
    other_model, other_prefix = Reference(shift=1.0), Reference(shift=2.0)
    assert store.reference("sft adapter", PREFIX, pairs, other_model) == other_model(pairs)
    assert store.reference("base", [1, 2], pairs, other_prefix) == other_prefix(pairs)
    assert other_model.asked[0] == other_prefix.asked[0] == [0, 1, 2]


def test_the_reference_is_named_by_its_files_so_a_rewritten_model_is_another_reference(tmp_path):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "sub" / "config.json").write_text("{}")
    before = reference_identity(model, None, "torch.float32", "cpu")
    assert [name for name, *_ in files_identity(model)] == ["model.safetensors", "sub/config.json"]
    assert reference_identity(model, None, "torch.bfloat16", "cpu") != before
    assert reference_identity(model, None, "torch.float32", "cuda") != before
    (model / "model.safetensors").write_bytes(b"WEIGHTS")  # same size, new contents
    os.utime(model / "model.safetensors", ns=(1, 1))
    assert reference_identity(model, None, "torch.float32", "cpu") != before


def test_a_store_that_cannot_be_used_computes_every_pair_and_says_so(tmp_path, caplog):
    broken = tmp_path / "ref.db"
    broken.write_bytes(b"this is not a database" * 100)
    pairs, reference = [example(i) for i in range(3)], Reference()
    with caplog.at_level(logging.WARNING):
        assert ReferenceStore(broken).reference("base", PREFIX, pairs, reference) == reference(pairs)
    assert reference.asked[0] == [0, 1, 2]
    assert "could not be read" in caplog.text and "could not be kept" in caplog.text


def test_values_unused_for_the_keep_period_are_dropped(tmp_path, monkeypatch):
    store, pairs = ReferenceStore(tmp_path / "ref.db"), [example(i) for i in range(4)]
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now - (KEEP_DAYS + 2) * 86400)
    store.reference("base", PREFIX, pairs, Reference())  # all four, long ago
    monkeypatch.setattr(time, "time", lambda: now - 86400)
    store.reference("base", PREFIX, pairs[:2], Reference())  # two of them used again since
    monkeypatch.setattr(time, "time", lambda: now)
    today = Reference()
    store.reference("base", PREFIX, [example(9)], today)  # a write drops what has been unused for too long
    again = Reference()
    store.reference("base", PREFIX, pairs, again)
    assert again.asked == [[2, 3]]


def soft(examples: list[dict]) -> None:
    """A stand-in for the distillation pass: two candidates per chosen token, weights from the token ids."""
    for e in examples:
        e["chosen_soft_ids"] = [[token, token + 1] for token in e["chosen_ids"]]
        e["chosen_soft_weights"] = [[(token % 4) / 8, 1 - (token % 4) / 8] for token in e["chosen_ids"]]


def test_distillation_targets_are_kept_exactly_and_computed_only_for_answers_not_seen(tmp_path):
    store, asked = ReferenceStore(tmp_path / "ref.db"), []

    def compute(examples):
        asked.append([e["index"] for e in examples])
        soft(examples)

    night_one = [example(i) for i in range(3)]
    store.soft_targets("base", PREFIX, night_one, 2, compute)
    night_two = [example(i) for i in (2, 5, 0)]
    store.soft_targets("base", PREFIX, night_two, 2, compute)
    assert asked == [[0, 1, 2], [5]]
    expected = [example(i) for i in (2, 5, 0)]
    soft(expected)
    for got, want in zip(night_two, expected):  # weights a float32 holds exactly, as the pass's are: kept bit for bit
        assert (got["chosen_soft_ids"], got["chosen_soft_weights"]) == (want["chosen_soft_ids"], want["chosen_soft_weights"])
    store.soft_targets("base", PREFIX, [example(0)], 3, compute)  # another k: other targets
    store.soft_targets("sft adapter", PREFIX, [example(0)], 2, compute)  # another reference
    assert asked[2:] == [[0], [0]]


def test_garbage_collection_counts_and_drops_both_kinds_of_kept_values(tmp_path, monkeypatch):
    store, then = ReferenceStore(tmp_path / "ref.db"), time.time()
    store.reference("base", PREFIX, [example(i) for i in range(2)], Reference())
    store.soft_targets("base", PREFIX, [example(i) for i in range(3)], 2, soft)
    monkeypatch.setattr(time, "time", lambda: then + 10 * 86400)
    store.reference("base", PREFIX, [example(7)], Reference())
    now = then + (KEEP_DAYS + 2) * 86400
    assert store.prune(now, dry_run=True) == (5, 1)
    assert store.prune(now) == (5, 1) and store.prune(now) == (0, 1)


def test_an_adapter_is_named_by_its_contents_so_its_copy_is_the_same_adapter(tmp_path):
    import shutil

    model, adapter = tmp_path / "model", tmp_path / "adapter"
    model.mkdir()
    adapter.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    (adapter / "adapter_model.safetensors").write_bytes(b"lora")
    trained = reference_identity(model, adapter, "torch.float32", "cpu")
    copy = shutil.copytree(adapter, tmp_path / "registry-copy")
    os.utime(copy / "adapter_model.safetensors", ns=(1, 1))
    assert reference_identity(model, copy, "torch.float32", "cpu") == trained
    (copy / "adapter_model.safetensors").write_bytes(b"LORA")  # same size, other weights
    assert reference_identity(model, copy, "torch.float32", "cpu") != trained
