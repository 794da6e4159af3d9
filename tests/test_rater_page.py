"""The rater page (GET /) in headless Chromium against `roleforge api` on the tiny model: the roles listed, a streamed
answer rated into the inbox, a multi-turn conversation, the blind A/B choice, and the page behind API keys.

Needs Debian's `chromium` (driven by Playwright, no browser download): skipped where it is missing, unless
ROLEFORGE_TEST_BROWSER=required (CI), which makes that a failure."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from roleforge.config.settings import Settings, load_settings
from roleforge.serving.app import create_app
from roleforge.serving.runner import server_thread
from roleforge.serving.service import Service
from tests.support.champions import lora_adapter, register_champion
from tests.support.local_server import wait_until

ROLES = ["ceo", "cfo", "coo", "tool-agent"]
FIRST, SECOND = "Should we raise prices for the enterprise tier?", "What is the budget risk of hiring now?"
NO_BROWSER = "no chromium on this machine (apt-get install chromium)"
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """The system's Chromium under Playwright."""
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("ROLEFORGE_TEST_BROWSER") == "required":
            pytest.fail(f"{NO_BROWSER}, and ROLEFORGE_TEST_BROWSER=required")
        pytest.skip(NO_BROWSER)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    """A fresh page with its own localStorage; an uncaught script error on it fails the test."""
    context = browser.new_context()
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    script_errors: list[Any] = []
    opened.on("pageerror", lambda error: script_errors.append(error))
    yield opened
    context.close()
    assert script_errors == []


@contextmanager
def api(settings: Settings, keys: frozenset[str] = frozenset()) -> Iterator[tuple[str, Service]]:
    """`roleforge api` in a thread, its model loaded."""
    service = Service(settings)
    with server_thread(create_app(service, keys)) as url:
        wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, "the model loading", every_s=0.1)
        yield url, service


def ask(page: Any, prompt: str) -> tuple[Any, dict[str, Any]]:
    """Send a message from the page; the finished turn and the chat request the page made."""
    turns = page.get_by_test_id("turn")
    before = turns.count()
    with page.expect_request("**/v1/chat/completions") as request:
        page.get_by_test_id("prompt").fill(prompt)
        page.get_by_test_id("send").click()
    turn = turns.nth(before)
    page.wait_for_function("t => t.dataset.state !== 'streaming'", arg=turn.element_handle(), timeout=WAIT_MS)
    assert turn.get_attribute("data-state") == "done", turn.inner_text()
    assert request.value.response().header_value("content-type").startswith("text/event-stream"), "the answer streams"
    return turn, request.value.post_data_json


def answers(turn: Any) -> list[str]:
    return turn.get_by_test_id("answer-text").all_text_contents()


def inbox_rows(home: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted((home / "inbox").glob("*.jsonl"))]


def feedback_saved(turn: Any) -> str:
    status = turn.get_by_test_id("feedback-status")
    turn.page.wait_for_function("s => ['ok', 'error'].includes(s.dataset.state)", arg=status.element_handle())
    assert status.get_attribute("data-state") == "ok", status.inner_text()
    return status.inner_text()


@pytest.fixture()
def cfo_champion(home: Path, tiny_model_dir: Path, tmp_path: Path) -> tuple[Settings, str]:
    """cfo served by a champion adapter, the other roles by the base model (whose greedy answers are blank lines)."""
    settings = load_settings()
    return settings, register_champion(settings, "cfo", lora_adapter(tiny_model_dir, tmp_path / "cfo", seed=0))


def test_roles_listed_a_streamed_answer_rated_and_a_second_turn(home: Path, page: Any, cfo_champion) -> None:
    settings, version = cfo_champion
    with api(settings) as (url, service):
        page.goto(url)
        roles = page.get_by_test_id("role")
        roles.nth(len(ROLES) - 1).wait_for()
        assert [r.get_attribute("data-role") for r in roles.all()] == ROLES
        assert page.get_by_test_id("role-serving").all_inner_texts() == ["base model", f"champion v{version}",
                                                                          "base model", "base model"]
        page.get_by_test_id("max-tokens").fill("12")
        page.get_by_test_id("rater").fill("Ada")

        page.locator('[data-role="coo"]').click()
        blank, _ = ask(page, FIRST)
        assert answers(blank)[0].strip() == "", "the tiny base model answers with blank lines"
        blank.get_by_test_id("rate-3").click()
        status = blank.get_by_test_id("feedback-status")
        status.filter(has_text="feedback contract").wait_for()
        assert status.get_attribute("data-state") == "error" and not blank.get_by_test_id("rate-3").is_disabled()
        assert inbox_rows(home) == []

        page.locator('[data-role="cfo"]').click()
        assert page.get_by_test_id("turn").count() == 0, "another role starts another conversation"
        assert page.get_by_test_id("role-hint").inner_text() == "Talking to cfo"
        turn, request = ask(page, FIRST)
        assert request["stream"] is True and request["model"] == "cfo" and request["max_tokens"] == 12
        (answer,) = answers(turn)
        response_id = turn.get_attribute("data-response-id")
        assert service.ledger.get(response_id).answers[0]["text"] == answer, "the page shows the answer as streamed"
        turn.get_by_test_id("comment").fill("too vague")
        turn.get_by_test_id("rate-4").click()
        assert "rated 4/5" in feedback_saved(turn)
        (row,) = inbox_rows(home)
        assert (row["metadata"]["response_id"], row["response"], row["rating"], row["rater"], row["agent_role"]) == (
            response_id, answer, 4, "Ada", "cfo")
        assert row["metadata"]["comment"] == "too vague"
        assert turn.get_by_test_id("rate-5").is_disabled(), "one rating per answer"

        second, request = ask(page, SECOND)
        assert request["messages"] == [{"role": "user", "content": FIRST}, {"role": "assistant", "content": answer},
                                       {"role": "user", "content": SECOND}], "the page sends the conversation so far"
        second.get_by_test_id("rate-2").click()
        feedback_saved(second)
        rows = inbox_rows(home)
        assert len(rows) == 2
        (later,) = [r for r in rows if r["metadata"]["response_id"] == second.get_attribute("data-response-id")]
        assert later["metadata"]["history"] == request["messages"][:2] and later["rating"] == 2

        page.get_by_test_id("new-chat").click()
        assert page.get_by_test_id("turn").count() == 0


@pytest.fixture()
def ab_settings(home: Path, tiny_model_dir: Path, tmp_path: Path) -> tuple[Settings, str]:
    """ceo with a champion and a held-back challenger, answering every request with both."""
    from roleforge.registry.tracking import mlflow_client

    config = Path(os.environ["ROLEFORGE_CONFIG"])
    config.write_text(config.read_text() + "\n[roles.ceo.serving]\nab_share = 1.0\n")
    settings = load_settings()
    champion = register_champion(settings, "ceo", lora_adapter(tiny_model_dir, tmp_path / "champion", seed=1))
    client = mlflow_client(settings.resolved_tracking_uri)
    name = settings.registered_model_name("ceo")
    challenger = client.create_model_version(name, source=lora_adapter(tiny_model_dir, tmp_path / "challenger", seed=2)
                                             .resolve().as_uri())
    client.set_model_version_tag(name, challenger.version, "roleforge.promoted", "false")
    return settings, champion


def test_ab_shows_two_blind_answers_and_choosing_b_writes_a_preference(home: Path, page: Any, ab_settings) -> None:
    settings, champion = ab_settings
    with api(settings) as (url, service):
        page.goto(url)
        ceo = page.locator('[data-role="ceo"]')
        assert "champion v" + champion in ceo.inner_text() and "A/B 100%" in ceo.inner_text()
        page.get_by_test_id("max-tokens").fill("12")
        turn, _ = ask(page, FIRST)
        shown = answers(turn)
        assert [a.get_attribute("data-choice") for a in turn.get_by_test_id("answer").all()] == ["a", "b"]
        assert len(set(shown)) == 2 and all(a.strip() for a in shown), f"two different, non-blank answers: {shown}"
        text = turn.inner_text()
        assert not any(hint in text for hint in ("champion", "challenger", "v" + champion)), "the choice stays blind"
        assert turn.get_by_test_id("rate-1").count() == 0
        turn.get_by_test_id("choose-b").click()
        assert "answer B preferred" in feedback_saved(turn)
        assert "chosen" in turn.get_by_test_id("answer").nth(1).get_attribute("class")
        response_id = turn.get_attribute("data-response-id")
        assert [a["text"] for a in service.ledger.get(response_id).answers] == shown
    (row,) = inbox_rows(home)
    assert (row["metadata"]["response_id"], row["preference"], row["response_a"], row["response_b"]) == (
        response_id, "b", *shown)


def test_page_works_behind_api_keys_once_the_key_is_entered(home: Path, page: Any, cfo_champion) -> None:
    with api(cfo_champion[0], frozenset({"k1"})) as (url, _):
        assert page.goto(url).status == 200, "the page itself needs no key"
        banner = page.get_by_test_id("banner")
        banner.filter(has_text="missing or wrong API key").wait_for()
        assert page.get_by_test_id("role").count() == 0
        page.get_by_test_id("api-key").fill("k1")
        page.get_by_test_id("save-key").click()
        page.get_by_test_id("role").nth(len(ROLES) - 1).wait_for()
        assert banner.inner_text() == ""

        page.reload()
        assert page.get_by_test_id("api-key").input_value() == "k1", "the key is kept in localStorage"
        page.locator('[data-role="cfo"]').click()
        page.get_by_test_id("max-tokens").fill("12")
        turn, _ = ask(page, FIRST)
        assert answers(turn)[0].strip()

        page.get_by_test_id("api-key").fill("wrong")
        page.get_by_test_id("save-key").click()
        turn.get_by_test_id("rate-5").click()
        status = turn.get_by_test_id("feedback-status")
        status.filter(has_text="missing or wrong API key").wait_for()
        assert status.get_attribute("data-state") == "error" and inbox_rows(home) == []
        page.get_by_test_id("api-key").fill("k1")
        page.get_by_test_id("save-key").click()
        turn.get_by_test_id("rate-5").click()
        feedback_saved(turn)
    (row,) = inbox_rows(home)
    assert row["metadata"]["response_id"] == turn.get_attribute("data-response-id") and row["rating"] == 5
