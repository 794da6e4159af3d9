"""`roleforge api` on the tiny model: the OpenAI client against it, batching that changes no answer, the queue limit,
hot swaps under load, A/B serving, feedback into the inbox and from there into the store, API keys."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from roleforge.config.settings import load_settings
from roleforge.ops.errors import RoleforgeError
from roleforge.serving.app import create_app
from roleforge.serving.engine import CHALLENGER, CHAMPION, Job, ServingModel
from roleforge.serving.runner import check_binding, server_thread
from roleforge.serving.service import Service
from tests.support.champions import lora_adapter, register_champion
from tests.support.local_server import free_port, stop, wait_until

ROLES = ("ceo", "cfo", "coo", "tool-agent")
# Prompts the tiny model (trained on the sample's words) answers with text rather than only whitespace.
PROMPTS = ["Should we raise prices for the enterprise tier?", "What is the budget risk of hiring now?",
           "Plan the office move for next quarter.", "Search the web for our competitor's pricing."]


def configure(home: Path, extra: str) -> None:
    config = Path(os.environ["ROLEFORGE_CONFIG"])
    config.write_text(config.read_text() + extra)


@pytest.fixture()
def champions(home, tiny_model_dir, tmp_path):
    """ceo and cfo with champions (different adapters), coo and tool-agent on the base model."""
    configure(home, "\n[serving]\npoll_seconds = 0.2\nbatch_wait_ms = 20\n")
    settings = load_settings()
    versions = {role: register_champion(settings, role, lora_adapter(tiny_model_dir, tmp_path / role, seed=i))
                for i, role in enumerate(("ceo", "cfo"))}
    return settings, versions


def running(settings, keys=frozenset(), rng=None):
    service = Service(settings, rng)
    return service, server_thread(create_app(service, keys))


def wait_ready(url: str, headers: dict[str, str] | None = None) -> None:
    wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, "the model loading", every_s=0.1)


def chat(url: str, role: str, prompt: str, max_tokens: int = 12, **extra) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=120,
                      json={"model": role, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, **extra})


def test_openai_client_gets_each_roles_answer_and_models_lists_versions(champions):
    from openai import OpenAI

    settings, versions = champions
    service, server = running(settings)
    with server as url:
        wait_ready(url)
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        listed = {m.id: m.model_dump() for m in client.models.list().data}
        assert set(listed) == set(ROLES)
        assert listed["ceo"]["version"] == versions["ceo"] and listed["ceo"]["serving"] == "champion"
        assert listed["coo"]["version"] is None and listed["coo"]["serving"] == "base"
        answers = {}
        for role, prompt in zip(ROLES, PROMPTS):
            reply = client.chat.completions.create(model=role, messages=[{"role": "user", "content": prompt}], max_tokens=10)
            assert reply.id.startswith("chatcmpl-") and reply.model == role and reply.usage.completion_tokens > 0
            answers[role] = reply.choices[0].message.content
        # The same prompt to a champion and to the base model: the adapter answers differently.
        same = [client.chat.completions.create(model=r, messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=10)
                .choices[0].message.content for r in ("ceo", "coo")]
        assert same[0] != same[1]
        # adapter_id (what an OpenAI client sends through extra_body) picks the role over `model`.
        routed = client.chat.completions.create(model="coo", messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=10,
                                                extra_body={"adapter_id": "ceo"})
        assert routed.choices[0].message.content == same[0]
        # A role as users write it, and its registered model name, reach the same champion.
        for spelling in ("CEO", "roleforge-ceo"):
            assert client.chat.completions.create(model=spelling, messages=[{"role": "user", "content": PROMPTS[0]}],
                                                  max_tokens=10).choices[0].message.content == same[0]
        streamed = client.chat.completions.create(model="ceo", messages=[{"role": "user", "content": PROMPTS[0]}],
                                                  max_tokens=10, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
        assert text == same[0], "streaming sends the same answer, piece by piece"
        missing = httpx.post(f"{url}/v1/chat/completions", json={"model": "cto", "messages": [{"role": "user", "content": "x"}]})
        assert missing.status_code == 404 and "unknown model 'cto'" in missing.json()["error"]["message"]


def test_batched_answers_equal_one_at_a_time(tiny_model_dir, tmp_path):
    """A mixed batch (two adapters and the base model) answers each row as that row alone would be answered."""
    engine = ServingModel(tiny_model_dir, "float32")
    for i, role in enumerate(("ceo", "cfo")):
        engine.install(role, CHAMPION, str(i + 1), lora_adapter(tiny_model_dir, tmp_path / role, seed=i))
    template = engine.tokenizer.apply_chat_template
    prompts = [template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) for p in PROMPTS]
    batch = [Job(prompt=prompt, max_new_tokens=9 + i, role=role) for i, (role, prompt) in enumerate(zip(("ceo", "cfo", "coo", "ceo"), prompts))]
    engine.run(batch)
    for job in batch:
        alone = Job(prompt=job.prompt, max_new_tokens=job.max_new_tokens, role=job.role)
        engine.run([alone])
        assert (alone.text, alone.completion_tokens, alone.version) == (job.text, job.completion_tokens, job.version)
    assert [job.completion_tokens <= job.max_new_tokens for job in batch] == [True] * 4
    # A stop string taken from a longer answer, where it first occurs (a random tiny model may answer in a few bytes).
    whole = Job(prompt=prompts[0], max_new_tokens=32, role="ceo")
    engine.run([whole])
    cut = next(i for i in range(1, len(whole.text) - 1)
               if whole.text.find(whole.text[i:i + 2]) == i and "\ufffd" not in whole.text[i:i + 2])
    stopped = Job(prompt=prompts[0], max_new_tokens=32, stop=(whole.text[cut:cut + 2],), role="ceo")
    engine.run([stopped])
    assert stopped.finish_reason == "stop" and stopped.text == whole.text[:cut]


def test_load_over_four_roles_with_a_promotion_midway(champions, tiny_model_dir, tmp_path):
    """200 concurrent requests: each answered or refused with 429 and Retry-After, none fails. Clients that retry
    after a 429 all get answers, and a promotion during the load reaches the server with no failed request: the
    ceo's answers come from the old champion, then from the new one."""
    configure(champions[0].home, "max_queue = 24\nmax_batch = 8\n")
    settings, versions = load_settings(), champions[1]
    service, server = running(settings)
    promoted: list[str] = []

    def one(i: int) -> tuple[int, str | None, int, str | None]:
        if i == 80:
            promoted.append(register_champion(settings, "ceo", lora_adapter(tiny_model_dir, tmp_path / "ceo-v2", seed=7)))
        first = reply = chat(url, ROLES[i % 4], PROMPTS[i % 4], max_tokens=6)
        while reply.status_code == 429:  # as a client would: again after Retry-After
            time.sleep(float(reply.headers["retry-after"]))
            reply = chat(url, ROLES[i % 4], PROMPTS[i % 4], max_tokens=6)
        version = reply.json()["roleforge"]["version"] if reply.status_code == 200 else None
        return first.status_code, first.headers.get("retry-after"), reply.status_code, version if i % 4 == 0 else None

    with server as url:
        wait_ready(url)
        with ThreadPoolExecutor(200) as pool:
            outcomes = list(pool.map(one, range(200)))
        first = [status for status, _, _, _ in outcomes]
        assert set(first) == {200, 429}, first
        assert all(retry == "1" for status, retry, _, _ in outcomes if status == 429)
        assert [final for _, _, final, _ in outcomes] == [200] * 200
        assert {v for _, _, _, v in outcomes if v} == {versions["ceo"], promoted[0]}
        wait_until(lambda: service.engine.served["ceo"][CHAMPION] == promoted[0], 10, "the promotion reaching the server", 0.1)
        listed = {m["id"]: m for m in httpx.get(f"{url}/v1/models").json()["data"]}
        assert listed["ceo"]["version"] == promoted[0]
        metrics = httpx.get(f"{url}/metrics").text
        assert f'roleforge_adapter_version{{role="ceo",slot="champion"}} {float(promoted[0])}' in metrics
        assert 'roleforge_requests_total{role="cfo",status="429"}' in metrics and "roleforge_queue_depth" in metrics


def test_feedback_takes_a_thumbs_button_as_the_ends_of_the_rating_scale():
    from pydantic import ValidationError

    from roleforge.serving.app import FeedbackRequest

    assert [FeedbackRequest(response_id="r", rating=given).rating for given in ("up", "Thumbs Down", "\N{THUMBS UP SIGN}", 3)] == [5, 1, 5, 3]
    with pytest.raises(ValidationError):
        FeedbackRequest(response_id="r", rating="sideways")


def test_feedback_lands_in_the_inbox_and_ingest_stores_its_ids(champions):
    settings, versions = champions
    service, server = running(settings)
    with server as url:
        wait_ready(url)
        reply = chat(url, "ceo", PROMPTS[0]).json()
        posted = httpx.post(f"{url}/v1/feedback", json={"response_id": reply["id"], "rating": 5, "rater": "dana", "comment": "clear"})
        assert posted.status_code == 200, posted.text
        assert posted.json()["model_version"] == versions["ceo"]
        unknown = httpx.post(f"{url}/v1/feedback", json={"response_id": "chatcmpl-nope", "rating": 3})
        assert unknown.status_code == 404
        for bad, reason in (({"response_id": reply["id"], "rating": 7}, "rating"),
                            ({"response_id": reply["id"]}, "either rating"),
                            ({"response_id": reply["id"], "preference": "a"}, "one answer"),
                            ({"response_id": reply["id"], "rating": 4, "extra": 1}, "extra")):
            refused = httpx.post(f"{url}/v1/feedback", json=bad)
            assert refused.status_code == 422 and reason in refused.json()["error"]["message"], refused.text
    inbox = settings.home / "inbox"
    files = [p for p in inbox.iterdir()]
    assert len(files) == 1 and not files[0].name.startswith(".")
    row = json.loads(files[0].read_text())
    assert row["response"] == reply["choices"][0]["message"]["content"] and row["rating"] == 5 and row["rater"] == "dana"
    ingest = subprocess.run([sys.executable, "-m", "roleforge.cli", "ingest", "--json"], capture_output=True, text=True)
    assert ingest.returncode == 0, ingest.stderr
    with sqlite3.connect(settings.home / "store.db") as db:
        stored = [json.loads(m) for (m,) in db.execute("select metadata from feedback")]
    assert stored == [{"response_id": reply["id"], "model_version": versions["ceo"], "source": "api", "comment": "clear"}]


def test_ab_serving_answers_twice_blind_and_the_choice_is_a_human_ab_row(champions, tiny_model_dir, tmp_path):
    settings, versions = champions
    configure(settings.home, "\n[roles.ceo.serving]\nab_share = 1.0\n")
    settings = load_settings()
    from roleforge.registry.tracking import mlflow_client

    client = mlflow_client(settings.resolved_tracking_uri)
    name = settings.registered_model_name("ceo")
    held = client.create_model_version(name, source=lora_adapter(tiny_model_dir, tmp_path / "held", seed=5).resolve().as_uri())
    client.set_model_version_tag(name, held.version, "roleforge.promoted", "false")
    # A seeded draw whose four A/B requests come in both orders: an unseeded one gives one order all four times 1 in 8.
    service, server = running(settings, rng=random.Random(1))
    with server as url:
        wait_ready(url)
        assert httpx.get(f"{url}/v1/models").json()["data"][0]["challenger_version"] == str(held.version)
        replies = [chat(url, "ceo", p, max_tokens=10).json() for p in PROMPTS]
        assert all(len(r["choices"]) == 2 and r["roleforge"] == {"ab": True, "version": None} for r in replies)
        served = [service.ledger.get(r["id"]) for r in replies]
        orders = {tuple(a["slot"] for a in s.answers) for s in served}
        assert orders == {(CHAMPION, CHALLENGER), (CHALLENGER, CHAMPION)} or len(replies) < 4, "the order is randomised"
        reply, record = next((r, s) for r, s in zip(replies, served) if s.answers[0]["text"] != s.answers[1]["text"])
        assert httpx.post(f"{url}/v1/feedback", json={"response_id": reply["id"], "rating": 4}).status_code == 422
        assert httpx.post(f"{url}/v1/feedback", json={"response_id": reply["id"], "preference": "first"}).status_code == 422
        # Stored as "b", the way a feedback file's "B" is.
        assert httpx.post(f"{url}/v1/feedback", json={"response_id": reply["id"], "preference": "B"}).status_code == 200
        assert chat(url, "cfo", PROMPTS[1]).json()["roleforge"]["ab"] is False, "only roles with an ab_share"
    (row,) = [json.loads(p.read_text()) for p in (settings.home / "inbox").iterdir()]
    assert (row["response_a"], row["response_b"], row["preference"]) == (
        reply["choices"][0]["message"]["content"], reply["choices"][1]["message"]["content"], "b")
    assert row["metadata"]["model_version"] == versions["ceo"]
    assert {row["metadata"]["ab"][k]["slot"] for k in "ab"} == {CHAMPION, CHALLENGER} and record.id == reply["id"]


def test_api_keys(champions):
    settings, _ = champions
    with pytest.raises(RoleforgeError, match="ROLEFORGE_API_KEYS"):
        check_binding("0.0.0.0", frozenset())
    check_binding("0.0.0.0", frozenset({"k"}))
    check_binding("::1", frozenset())
    service, server = running(settings, frozenset({"k1", "k2"}))
    with server as url:
        wait_ready(url)
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer k2"}).status_code == 200
        assert httpx.get(f"{url}/metrics", headers={"X-API-Key": "k1"}).status_code == 200
        assert httpx.get(f"{url}/").status_code == 200, "the rater page loads; its calls carry the key"


def test_a_killed_server_keeps_the_feedback_it_accepted(champions):
    """`roleforge api` as its own process: feedback acknowledged, then SIGKILL; the row is whole in the inbox."""
    settings, _ = champions
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "roleforge.cli", "api", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 120, "roleforge api starting", every_s=0.2)
        reply = chat(url, "cfo", PROMPTS[1]).json()
        assert httpx.post(f"{url}/v1/feedback", json={"response_id": reply["id"], "rating": 2}).status_code == 200
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
    finally:
        stop(server)
    (path,) = (settings.home / "inbox").iterdir()
    assert json.loads(path.read_text())["metadata"]["response_id"] == reply["id"]
    time.sleep(0)  # nothing else to wait for: the row was fsynced and renamed before the 200


def test_the_ledger_forgets_answers_past_its_days(tmp_path, monkeypatch):
    from roleforge.serving import ledger as ledger_module
    from roleforge.serving.ledger import Ledger, Served

    clock = [1_000_000.0]
    monkeypatch.setattr(ledger_module.time, "time", lambda: clock[0])
    ledger = Ledger(tmp_path / "responses.db", keep_days=1)
    ledger.record(Served("old", "ceo", "p", "s", [], [{"text": "a", "version": "1", "slot": "champion"}]))
    clock[0] += 2 * 86400  # two days on: the next answer recorded prunes the old one
    ledger.record(Served("new", "ceo", "p", "s", [], [{"text": "b", "version": "1", "slot": "champion"}]))
    assert ledger.get("old") is None and ledger.get("new").answers[0]["text"] == "b"
