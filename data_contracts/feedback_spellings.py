"""Feedback rows as other tools write them, put in the contract's fields before the contract checks them.

Exports from chat platforms, labeling tools and preference datasets name the same things differently: `question` or
`input` for the prompt, `score` for the rating, a thumbs up or down, `prompt`/`chosen`/`rejected` (TRL's preference
datasets), or the whole exchange as chat `messages`. Each is read as the field it means; a field the contract does not
know (`session_id`, `latency_ms`) is kept in the row's metadata instead of refusing the row for it. What cannot be
read as a row still gets a one-line reason, naming the field.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

# Between the words of a name: "Tool Agent", "tool_agent" and "TOOL-AGENT" are one role; "Agent Role" one field.
NAME_SEPARATORS = re.compile(r"[\s_-]+")
# Other names of the contract's fields, as names are matched (case and separators ignored: NAME_SEPARATORS).
FIELD_ALIASES = {"role": "agent_role", "agent": "agent_role", "question": "prompt", "query": "prompt", "input": "prompt",
                 "instruction": "prompt", "answer": "response", "output": "response", "completion": "response",
                 "score": "rating", "stars": "rating"}
# Fields that give the row in another shape: a preference dataset's pair, a chat transcript, a thumbs up or down.
SHAPES = ("chosen", "rejected", "messages", "thumbs")
# A thumbs up counts as a 5 on the contract's 1-5 scale and a thumbs down as a 1: the ends of the scale, so that the
# rating labeler pairs an answer given a thumbs up against one given a thumbs down for the same prompt.
THUMBS = {"up": 5, "thumbs_up": 5, "thumbsup": 5, "\N{THUMBS UP SIGN}": 5, "+1": 5, "like": 5,
          "down": 1, "thumbs_down": 1, "thumbsdown": 1, "\N{THUMBS DOWN SIGN}": 1, "-1": 1, "dislike": 1}
# A thumbs field may also be a flag: true/false, 1/0, or their text in a CSV cell.
FLAGS = {"true": 5, "yes": 5, "1": 5, "false": 1, "no": 1, "0": 1}
# "4/5", "8 out of 10", "4 stars": a score on a stated scale, put on the contract's 1-5.
OUT_OF = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*(\d+)\s*")
STARS = re.compile(r"\s*([1-5])\s*stars?\s*", re.IGNORECASE)
RATED, COMPARED = ("response", "rating"), ("response_a", "response_b", "preference")
# The fields that hold an answer, in whatever shape it came.
ANSWER_FIELDS = ("response", "chosen", "rejected", "response_a", "response_b")
# Where ingest's CSV reader puts a row's cells past its header's columns (csv.DictReader's restkey). Such a row is
# refused, in ingest and in a quarantine replay alike: a text with an unquoted comma shifts every cell after it.
EXTRA_CELLS = "cells past the header"


def field_key(name: str) -> str:
    """A name as field names and A/B choices are matched: case, blanks around it and the separators between its words
    ignored ("Agent Role " is agent_role, "Response B" response_b)."""
    return NAME_SEPARATORS.sub("_", name.strip().casefold())


def metadata_value(value: Any) -> Any:
    """Metadata as given, or the object a CSV cell's JSON text holds.

    Raises:
        ValueError: text that starts like an object and does not parse as one.
    """
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError("must be an object (a CSV cell: its JSON text)") from None
    return value


def thumbs_rating(value: Any) -> Any:
    """A rating written as a thumbs up or down, as "4 stars", or on a stated scale ("4/5", "8 out of 10"), as the
    contract's 1-5 integer; anything else as given (the rating's own check then judges it)."""
    if not isinstance(value, str):
        return value
    spelled = _spelled(value)
    if spelled in THUMBS:
        return THUMBS[spelled]
    stars = STARS.fullmatch(value)
    if stars:
        return int(stars.group(1))
    out_of = OUT_OF.fullmatch(value)
    if out_of and 0 < float(out_of.group(1)) <= int(out_of.group(2)):
        return max(1, int(float(out_of.group(1)) / int(out_of.group(2)) * 5 + 0.5))  # half up: 5/10 is a 3
    return value


# "2026-11-02 09:30:00 UTC" (SQL and BigQuery exports) and "Mon, 02 Nov 2026 09:30:00 GMT" (HTTP and mail dates) name one
# instant each; ISO 8601 needs neither. Ambiguous forms such as 11/02/2026 stay refused.
NAMED_UTC = re.compile(r"(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?:UTC|GMT)", re.IGNORECASE)
MAIL_DATE = re.compile(r"[A-Za-z]{3},\s*\d{1,2}\s+[A-Za-z]{3}\s+\d{4}\s+\d{2}:\d{2}(?::\d{2})?\s+(?:[A-Z]{2,3}|[+-]\d{4})")


def timestamp_text(value: Any) -> Any:
    """A timestamp in one of the unambiguous forms ISO 8601 lacks (above), as ISO 8601; anything else as given."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    named = NAMED_UTC.fullmatch(text)
    if named:
        return f"{named.group(1)}+00:00"
    if MAIL_DATE.fullmatch(text):
        from email.utils import parsedate_to_datetime

        try:
            return parsedate_to_datetime(text).isoformat()
        except (TypeError, ValueError):
            return value
    return value


def _spelled(value: str) -> str:
    return NAME_SEPARATORS.sub("_", value.strip().casefold().replace("\N{VARIATION SELECTOR-16}", ""))


def feedback_fields(value: Any, fields: frozenset[str]) -> Any:
    """The row in the contract's fields (`fields`): aliases renamed, other shapes read, unknown fields moved into its
    metadata. A row already in the contract's fields, or a value that is not an object, is returned as it is.

    Raises:
        ValueError: a shape that cannot be read (a transcript without a user turn, a message without content), or an
            unknown field that its metadata already holds with another value; the message names the field.
    """
    if type(value) is not dict or fields.issuperset(value):
        return value
    if EXTRA_CELLS in value:
        raise ValueError(f"{len(value[EXTRA_CELLS])} more cell(s) than the CSV header has columns (a text with an "
                         "unquoted comma shifts the cells after it)")
    row: dict[str, Any] = {}
    others: list[tuple[str, str, Any]] = []  # (field as written, the name it matches, value), in the row's order
    for key, item in value.items():
        name = field_key(key) if isinstance(key, str) else key
        if name in fields and name not in row:
            row[name] = item
        else:
            others.append((key, name, item))
    extras: dict[str, Any] = {}
    for key, name, item in others:
        name = FIELD_ALIASES.get(name, name)
        if (name in fields or name in SHAPES) and name not in row:
            row[name] = item
        elif item is not None and item != "":
            extras[key] = item
    _read_shapes(row, extras)
    if extras:
        row["metadata"] = _with_extras(row.get("metadata"), extras)
    return row


def _read_shapes(row: dict[str, Any], extras: dict[str, Any]) -> None:
    """Reads a transcript, a chosen/rejected pair and a thumbs field into the contract's fields, in place; what is
    not read (a shape given beside the fields it would fill) goes to `extras`."""
    if isinstance(row.get("prompt"), list) and "messages" not in row:  # TRL's conversational datasets
        row["messages"] = row.pop("prompt")
    if "messages" in row:
        if "prompt" in row:
            extras["messages"] = row.pop("messages")
        else:
            _read_transcript(row, _turns(row.pop("messages")))
    for field in ANSWER_FIELDS:
        if isinstance(row.get(field), (list, dict)):
            row[field] = _answer_text(field, row[field])
    if "chosen" in row or "rejected" in row:
        if any(row.get(field) is not None for field in (*RATED, *COMPARED)):
            extras.update({field: row.pop(field) for field in ("chosen", "rejected") if field in row})
        else:
            row["response_a"], row["response_b"] = row.pop("chosen", None), row.pop("rejected", None)
            row["preference"] = "a"
    if "thumbs" in row:
        thumbs = row.pop("thumbs")
        if row.get("rating") is None and thumbs is not None:
            spelled = _spelled(str(thumbs)) if isinstance(thumbs, (str, bool, int)) else None
            rating = THUMBS.get(spelled) or FLAGS.get(spelled)
            if rating is None:
                raise ValueError(f"thumbs: must be up or down (or true/false), not {thumbs!r}")
            row["rating"] = rating
        elif thumbs is not None:
            extras["thumbs"] = thumbs


def _turns(messages: Any) -> list[dict[str, str]]:
    """A chat transcript's turns as {"role", "content"} with text content (content parts' text joined)."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages: must be a list of chat messages ({role, content})")
    turns = []
    for number, message in enumerate(messages, 1):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
            raise ValueError(f"messages: message {number} must be an object with role and content")
        turns.append({"role": message["role"].strip().lower(), "content": _content(f"messages: message {number}", message["content"])})
    return turns


def _content(where: str, content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI's content parts: the text parts, in order
        texts = [part.get("text") for part in content if isinstance(part, dict) and part.get("type", "text") == "text"]
        if texts and all(isinstance(text, str) for text in texts):
            return "".join(texts)
    raise ValueError(f"{where}: content must be text")


def _read_transcript(row: dict[str, Any], turns: list[dict[str, str]]) -> None:
    """The prompt is the transcript's last user turn; an assistant turn after it is the rated response when the row
    names none; earlier turns and a system prompt are kept in the metadata, as the API keeps a conversation's."""
    system = [turn["content"] for turn in turns if turn["role"] in ("system", "developer")]
    turns = [turn for turn in turns if turn["role"] not in ("system", "developer")]
    if turns and turns[-1]["role"] == "assistant":
        last = turns.pop()
        if all(row.get(field) is None for field in ANSWER_FIELDS):
            row["response"] = last["content"]
        else:
            turns.append(last)
    users = [index for index, turn in enumerate(turns) if turn["role"] == "user"]
    if not users:
        raise ValueError("messages: no user turn to take the prompt from")
    row["prompt"] = turns[users[-1]]["content"]
    kept = {}
    if turns[:users[-1]]:
        kept["history"] = turns[:users[-1]]
    if turns[users[-1] + 1:]:
        kept["later_turns"] = turns[users[-1] + 1:]  # turns after the prompt that are not the rated answer
    if system:
        kept["system_prompt"] = "\n\n".join(system)
    if kept:
        row["metadata"] = _with_extras(row.get("metadata"), kept)


def _answer_text(field: str, value: Any) -> Any:
    """An answer given as a chat message, or as a list of them ending with the assistant's (TRL's conversational
    chosen/rejected), as its text."""
    message = value[-1] if isinstance(value, list) and value else value
    if isinstance(message, dict) and "content" in message and message.get("role", "assistant") == "assistant":
        return _content(field, message["content"])
    raise ValueError(f"{field}: must be text, or the assistant's chat message")


def _with_extras(metadata: Any, extras: dict[str, Any]) -> Any:
    """The row's metadata with the fields the contract does not know added under their own names."""
    if metadata is None:
        return dict(extras)
    try:
        metadata = metadata_value(metadata)
    except ValueError:
        return metadata  # the contract's check of metadata says what is wrong with it
    if not isinstance(metadata, dict):
        return metadata  # the contract's check of metadata says what is wrong with it
    merged = dict(metadata)
    for key, item in extras.items():
        if key in merged and merged[key] != item:
            raise ValueError(f"{key}: given as a field and in metadata with another value")
        merged[key] = item
    return merged
