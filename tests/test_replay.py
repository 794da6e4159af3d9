"""Replay: the base model's own answers to general prompts, trained on beside the role's pairs."""

from roleforge.training.replay import finished, general_prompts, reference_answers, replay_pairs


def test_the_general_prompts_split_into_replay_and_drift_sets_that_never_meet():
    replay, drift = general_prompts("replay"), general_prompts("drift")
    assert len(drift) >= 30 and len(replay) >= 4 * len(drift) * 0.7
    assert not set(replay) & set(drift)


def test_replay_pairs_set_the_base_answer_against_the_role_shape():
    answers = {f"question {n}?": f"answer {n}." for n in range(10)}
    role_pairs = [{"prompt": "Hire?", "chosen": "Decision: hire.", "rejected": "No idea."},
                  {"prompt": "Cut?", "chosen": "Decision: cut.", "rejected": "Maybe."}]
    pairs = replay_pairs(answers, role_pairs, 4, seed=1)
    assert len(pairs) == 4 and len({p["pair_id"] for p in pairs}) == 4
    assert all(answers[p["prompt"]] == p["chosen"] and p["rejected"] in {"Decision: hire.", "Decision: cut."} for p in pairs)
    assert pairs == replay_pairs(answers, role_pairs, 4, seed=1)  # the same pairs for the same snapshot
    assert replay_pairs(answers, role_pairs, 0, seed=1) == [] and replay_pairs({}, role_pairs, 4, seed=1) == []


def test_reference_answers_are_generated_once_and_read_back(tiny_model_dir, tmp_path, monkeypatch):
    from roleforge.models import generation
    from roleforge.models.base import load_model, load_tokenizer

    model, tokenizer = load_model(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)
    prompts = ["What is a river?", "Name a colour."]
    first = reference_answers(model, tokenizer, "You are helpful.", prompts, 6, tmp_path, "tiny")
    assert set(first) == set(prompts)
    monkeypatch.setattr(generation, "generate_answers", lambda *a, **k: (_ for _ in ()).throw(AssertionError("generated again")))
    assert reference_answers(model, tokenizer, "You are helpful.", prompts, 6, tmp_path, "tiny") == first
    assert finished({"a": "word " * 20, "b": "ok"}, tokenizer, 6) == {"b"}


def test_a_cut_off_answer_is_replayed_open_without_an_end_of_sequence_token(tiny_model_dir):
    from roleforge.models.base import load_tokenizer
    from roleforge.training.dpo_batches import tokenize_pairs

    tokenizer = load_tokenizer(tiny_model_dir)
    answers = {"Why is the sky blue?": "Light scatters off the air, and blue light scatters", "Name a colour.": "Red.", "Blank?": " "}
    role_pairs = [{"prompt": "Hire?", "chosen": "Decision: hire.", "rejected": "No idea."}]
    pairs = {p["prompt"]: p for p in replay_pairs(answers, role_pairs, 8, seed=1, complete={"Name a colour."})}
    assert set(pairs) == {"Why is the sky blue?", "Name a colour."}  # an empty answer teaches nothing
    assert pairs["Why is the sky blue?"].get("chosen_open") is True and "chosen_open" not in pairs["Name a colour."]
    _, examples = tokenize_pairs(tokenizer, "You are helpful.", [pairs["Why is the sky blue?"], pairs["Name a colour."]], 1024)
    eos = tokenizer.eos_token_id
    # Cut off: the model learns the base's words, not to stop after them; finished: it learns to stop there.
    assert examples[0]["chosen_ids"][-1] != eos and examples[0]["rejected_ids"][-1] == eos
    assert examples[1]["chosen_ids"][-1] == eos


def test_a_replayed_prompt_keeps_its_rejected_answer_when_the_roles_pairs_change_in_part():
    """Reference log-probs are kept by the pair's tokens: a pick drawn anew each night would recompute them all."""
    answers = {f"general question {n}?": f"answer {n}." for n in range(60)}
    role_pairs = [{"prompt": f"Q{n}?", "chosen": f"Decision: option {n}.", "rejected": "Maybe."} for n in range(40)]
    before = {p["prompt"]: p["rejected"] for p in replay_pairs(answers, role_pairs, 60, seed=40)}
    # The next night: five pairs gone, five new, and another count of pairs (the old seed).
    changed = role_pairs[5:] + [{"prompt": f"New {n}?", "chosen": f"Decision: new {n}.", "rejected": "No."} for n in range(5)]
    after = {p["prompt"]: p["rejected"] for p in replay_pairs(answers, changed, 60, seed=41)}
    kept = sum(before[prompt] == after[prompt] for prompt in before)
    gone = {pair["chosen"] for pair in role_pairs[:5]}
    assert kept == sum(before[prompt] not in gone and not after[prompt].startswith("Decision: new") for prompt in before)
    assert kept >= 40, "most prompts keep their pick"
    assert len(set(after.values())) > 20, "the picks still spread over the role's answers"
