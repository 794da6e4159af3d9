"""Roles as users write them: names in any case and configured aliases are stored under the role's own name; two
roles answering to one name are a configuration error; `--role` takes the same spellings."""

import argparse
import json
import os
import subprocess
import sys

import pytest

from roleforge.cli.common import command_settings, role_names
from roleforge.config.settings import load_settings
from roleforge.ops.errors import RoleforgeError
from roleforge.storage.schema import engine_for, feedback_counts, feedback_for_role
from roleforge.tasks.ingest import ingest_configured


def rated(role: str, prompt: str) -> dict:
    return {"agent_role": role, "prompt": prompt, "response": "Decision: go.", "rating": 4}


def add_config(text: str) -> None:
    with open(os.environ["ROLEFORGE_CONFIG"], "a", encoding="utf-8") as config:
        config.write(text)


def test_role_names_in_any_case_are_stored_under_the_configured_role(home, tmp_path):
    feedback = tmp_path / "platform.jsonl"
    rows = [rated("CEO", "Expand?"), rated("CFO", "Budget?"), rated("COO", "Hiring?"), rated("Ceo", "Merge?")]
    feedback.write_text("".join(json.dumps(row) + "\n" for row in rows))
    settings = load_settings()
    report = ingest_configured(settings, [str(feedback)])
    assert (report.ingested, report.quarantined, report.by_role) == (4, 0, {"ceo": 2, "cfo": 1, "coo": 1})
    engine = engine_for(settings.resolved_store_url)
    assert feedback_counts(engine) == {"ceo": 2, "cfo": 1, "coo": 1}
    assert {row["prompt"] for row in feedback_for_role(engine, "ceo")} == {"Expand?", "Merge?"}


def test_aliases_are_stored_under_the_role_and_count_as_the_same_content(home, tmp_path):
    add_config('\n[roles.ceo]\naliases = ["ceo_agent", "Chief-Executive"]\n')
    feedback = tmp_path / "aliases.jsonl"
    rows = [rated("ceo_agent", "Expand?"), rated("CHIEF-EXECUTIVE", "Merge?"), rated("ceo", "Expand?")]
    feedback.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = ingest_configured(load_settings(), [str(feedback)])
    assert (report.ingested, report.duplicates, report.by_role) == (2, 1, {"ceo": 3})


def test_csv_rows_are_matched_the_same_way(home, tmp_path):
    feedback = tmp_path / "platform.csv"
    feedback.write_text("agent_role,prompt,response,rating,response_a,response_b,preference\n"
                        "CFO,Budget?,Figures: 3.,4,,,\nTool-Agent,Weather?,Thought: x,2,,,\n"
                        "Tool Agent,Rain?,,,Thought: a,Thought: b,B\nCFO ,Cash?,,,Figures: 1.,Figures: 2.,response_a\n")
    report = ingest_configured(load_settings(), [str(feedback)])
    assert (report.ingested, report.quarantined, report.by_role) == (4, 0, {"cfo": 2, "tool-agent": 2})
    engine = engine_for(load_settings().resolved_store_url)
    assert {row["prompt"]: row["preference"] for row in feedback_for_role(engine, "tool-agent")} == {"Weather?": None, "Rain?": "b"}


def test_two_roles_answering_to_one_name_are_a_one_line_error(home):
    add_config('\n[roles.cfo]\naliases = ["Ceo"]\n')
    with pytest.raises(ValueError, match="roles 'ceo' and 'cfo' both answer to 'Ceo'"):
        load_settings()
    result = subprocess.run([sys.executable, "-m", "roleforge.cli", "status"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "bad configuration: roles 'ceo' and 'cfo' both answer to 'Ceo'" in result.stderr


def test_a_role_name_that_cannot_name_its_folders_and_model_is_a_one_line_error(home):
    add_config('\n[roles."sales/ops"]\nsystem_prompt = "You run sales operations."\n')
    result = subprocess.run([sys.executable, "-m", "roleforge.cli", "status"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "role name 'sales/ops' may not hold /" in result.stderr


def test_a_misspelt_setting_is_a_one_line_error_not_ignored(home):
    add_config('\n[roles.ceo.trainng.dpo]\nlearning_rate = 1e-4\n[roles.cfo.output]\nrequired_line = ["Figures:"]\n')
    result = subprocess.run([sys.executable, "-m", "roleforge.cli", "status"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "roles.ceo.trainng: Extra inputs are not permitted" in result.stderr


def test_a_misspelt_recipe_field_stops_a_night_before_it_starts(home, tmp_path):
    """TRL's DPOConfig knows its fields; a night checks every role's recipe with it up front, so a misspelt one is not
    found only when the role's turn to train comes, after the other roles have trained, or never while it has no
    feedback (as here: nothing is stored for it)."""
    add_config('\n[roles.cmo]\nsystem_prompt = "You are the CMO."\n[roles.cmo.training.dpo]\nlearning_rte = 1e-4\n')
    feedback = tmp_path / "ceo.jsonl"
    feedback.write_text(json.dumps(rated("ceo", "Expand?")) + "\n")
    result = subprocess.run([sys.executable, "-m", "roleforge.cli", "run", str(feedback), "--profile", "quick", "--no-warm-up"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "[roles.cmo.training]: bad training recipe:" in result.stderr and "learning_rte" in result.stderr
    assert not (home / "store.db").exists() or not feedback_for_role(engine_for(load_settings().resolved_store_url), "ceo")


def test_a_role_named_in_words_is_a_role_like_any_other(home, tmp_path):
    add_config('\n[roles."Head of Sales"]\nsystem_prompt = "You are the head of sales."\n')
    feedback = tmp_path / "sales.jsonl"
    feedback.write_text(json.dumps(rated("head-of-sales", "Q3 plan?")) + "\n" + json.dumps(rated("HEAD OF SALES ", "Q4?")) + "\n")
    report = ingest_configured(load_settings(), [str(feedback)])
    assert (report.ingested, report.by_role) == (2, {"Head of Sales": 2})


def test_role_options_take_the_names_and_aliases_feedback_may_use(home):
    add_config('\n[roles.ceo]\naliases = ["chief-executive"]\n')
    args = argparse.Namespace(role="Chief-Executive")
    settings = command_settings(args)
    assert args.role == "ceo" and settings.role("CEO") is settings.roles["ceo"]
    assert role_names(settings, "CFO, tool-agent") == ["cfo", "tool-agent"]
    with pytest.raises(RoleforgeError, match="unknown role 'cmo'"):
        command_settings(argparse.Namespace(role="cmo"))
