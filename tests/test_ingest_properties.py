"""Property: whatever a feedback file holds, every line is stored, quarantined or skipped as blank, and nothing
crashes ingestion."""

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roleforge.ingest.readers import read_records
from roleforge.ingest.rows import parse_records
from roleforge.tasks.ingest import ingest_files

ROLES = {"ceo", "tool-agent"}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
rowish = st.fixed_dictionaries(
    {"agent_role": st.sampled_from(["ceo", "tool-agent", "cmo", ""]), "prompt": st.text(max_size=30)},
    optional={"response": st.text(max_size=30), "rating": json_values, "response_a": st.text(max_size=10),
              "response_b": st.text(max_size=10), "preference": st.sampled_from(["a", "b", "c"]), "confidence": json_values},
)
lines = st.lists(st.one_of(
    st.binary(max_size=60).filter(lambda b: b"\n" not in b),
    json_values.map(lambda v: json.dumps(v).encode()),
    rowish.map(lambda v: json.dumps(v).encode()),
), max_size=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines)
def test_every_line_is_stored_quarantined_or_blank(content):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "feedback.jsonl"
        path.write_bytes(b"\n".join(content) + (b"\n" if content else b""))
        batch = parse_records(str(path), read_records(str(path)), ROLES)
        total = len(batch.rows) + len(batch.quarantined) + batch.blank
        assert total == len(content)
        assert all(q.reason and "\n" not in q.reason for q in batch.quarantined)
        report = ingest_files([str(path)], ROLES, f"sqlite:///{directory}/store.db", Path(directory) / "quarantine")
        assert report.ingested + report.duplicates == len(batch.rows) and report.quarantined == len(batch.quarantined)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(), st.text()), max_size=8))
def test_content_hash_form_is_the_json_module_s(values):
    """Stores filled before the hash used orjson keep deduplicating: the hashed bytes are json.dumps' compact form."""
    from roleforge.ingest.hashing import canonical_json

    expected = json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    assert canonical_json(values) == expected


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200).map(lambda b: b.replace(b"\x00", b"\n")), st.integers(1, 7), st.integers(1, 16))
def test_line_spans_cut_a_file_where_its_lines_end(content, lines, block_size):
    """The parse workers' chunks of a local file: every byte in exactly one span, each span `lines` whole lines (the
    last fewer), line ends where iterating over the file puts them."""
    import io

    from roleforge.ingest.readers import line_spans

    spans = list(line_spans(io.BytesIO(content), lines, block_size))
    assert b"".join(content[offset:offset + length] for offset, length, _ in spans) == content
    assert [count for _, _, count in spans] == [len(io.BytesIO(content[offset:offset + length]).readlines())
                                                for offset, length, _ in spans]
    assert all(count == lines for _, _, count in spans[:-1]) and all(count > 0 for _, _, count in spans)
    assert sum(count for _, _, count in spans) == len(io.BytesIO(content).readlines())


@settings(max_examples=500, deadline=None)
@given(st.builds(lambda lines, end: b"\n".join(lines) + end,
                 st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=40),
                 st.sampled_from([b"", b"\n"])),
       st.integers(1, 9), st.integers(1, 3), st.integers(1, 5))
def test_a_file_s_last_spans_are_cut_where_lines_end(content, lines, last, parts):
    """Tapered spans still cover every byte once, in order, in whole lines. A span is cut when fewer bytes follow it
    than `last` - 1/2 spans of its size (the file's last `last` spans, when spans are of one size), into pieces of
    at most ceil(its lines / parts) lines; the spans before are left whole."""
    import io

    from roleforge.ingest.readers import line_spans, tapered_spans

    whole = list(line_spans(io.BytesIO(content), lines))
    spans = list(tapered_spans(iter(whole), lambda at, length: content[at:at + length], len(content), last, parts))
    assert b"".join(content[offset:offset + length] for offset, length, _ in spans) == content
    assert [count for _, _, count in spans] == [len(io.BytesIO(content[offset:offset + length]).readlines())
                                                for offset, length, _ in spans]
    assert all(count > 0 for _, _, count in spans)
    pieces = iter(spans)
    for offset, length, count in whole:
        if parts < 2 or count < parts or len(content) - offset - length >= (last - 0.5) * length:
            assert next(pieces) == (offset, length, count)
            continue
        step, start, cut = -(-count // parts), offset, []
        while start < offset + length:
            piece = next(pieces)
            assert piece[0] == start and 0 < piece[2] <= step
            start += piece[1]
            cut.append(piece)
        assert start == offset + length and sum(piece[2] for piece in cut) == count and 2 <= len(cut) <= parts
    assert next(pieces, None) is None


keyed_rows = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 1)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(keyed_rows, st.sets(st.integers(0, 40)), st.lists(keyed_rows, min_size=1, max_size=3), st.booleans(),
       st.booleans())
def test_a_staged_insert_finds_the_rows_it_skipped(stored, deleted, files, search, ids_run_out):
    """Staged files inserted in one transaction store each new key once, in order, and report each row whose key a
    row with another content hash holds, with that row's id, whether the rows not stored are searched for one by one
    or found by a join of every staged row. Rows are (content key, which of two contents): the same pair again is a
    duplicate, the other content under a held key a collision; some stored rows are deleted first, so ids have
    gaps. Where the largest id is taken, SQLite gives new rows random ids, and the search must not be trusted."""
    from unittest import mock

    from roleforge.ingest.rows import to_stored_row
    from roleforge.storage import collisions, inserts, schema

    fields = dict.fromkeys(["rating", "response", "response_a", "response_b", "preference", "event_id", "rater",
                            "confidence", "metadata", "timestamp"])
    lines = iter(range(1, 10**6))

    def staged(directory: Path, rows: list[tuple[int, int]]) -> tuple[Path, list[tuple[int, int, int]]]:
        numbered = [(next(lines), key, content) for key, content in rows]
        stage = [{**to_stored_row({**fields, "agent_role": "ceo", "prompt": f"Q{line}?", "response": "Yes.",
                                   "rating": 4}, "f.jsonl", line), "content_key": key, "content_hash": str(content) * 64}
                 for line, key, content in numbered]
        return inserts.stage_rows(stage, directory), numbered

    held: dict[int, tuple[int, int]] = {}  # the model: key -> (content, id)
    last_id = 0

    def model(numbered: list[tuple[int, int, int]]) -> tuple[int, list[tuple[int, int, int]]]:
        nonlocal last_id
        inserted, collided = 0, []
        for line, key, content in numbered:
            if key not in held:
                last_id += 1
                held[key], inserted = (content, last_id), inserted + 1
            elif held[key][0] != content:
                collided.append((line, key, held[key][1]))
        return inserted, collided

    with tempfile.TemporaryDirectory() as name, \
            mock.patch.object(collisions, "SKIPPED_SEARCH_SHARE", 1.0 if search else 0.0):
        directory = Path(name)
        engine = schema.engine_for(f"sqlite:///{directory / 'store.db'}")
        if stored:
            path, numbered = staged(directory, stored)
            inserts.insert_staged(engine, path)
            model(numbered)
        with engine.begin() as connection:
            for key in deleted & held.keys():
                connection.exec_driver_sql("DELETE FROM feedback WHERE content_key = ?", (key,))
                del held[key]
            if ids_run_out:
                connection.exec_driver_sql(
                    "INSERT INTO feedback (id, content_hash, content_key, agent_role, kind, prompt, source, source_line) "
                    "VALUES (9223372036854775807, 'x', 1000, 'ceo', 'rating', 'p', 'f.jsonl', 0)")
            last_id = connection.exec_driver_sql("SELECT coalesce(max(id), 0) FROM feedback").scalar()
        paths, expected_inserted, expected = [], 0, []
        for rows in files:
            path, numbered = staged(directory, rows)
            paths.append(path)
            inserted, collided = model(numbered)
            expected_inserted, expected = expected_inserted + inserted, expected + collided
        result = inserts.insert_staged(engine, paths)
        with engine.connect() as connection:
            holders = [connection.exec_driver_sql("SELECT content_key, content_hash FROM feedback WHERE id = ?",
                                                  (holder,)).one() for _, holder in result.collided]
        engine.dispose()
    assert result.inserted == expected_inserted
    got = [(row["source_line"], row["content_key"], holder) for row, holder in result.collided]
    if ids_run_out:  # ids unknown to the model: each holder holds the row's key under another content
        assert [(line, key) for line, key, _ in got] == [(line, key) for line, key, _ in expected]
        assert all(held == (row["content_key"], str(1 - int(row["content_hash"][0])) * 64)
                   for (row, _), held in zip(result.collided, holders))
    else:
        assert got == expected
