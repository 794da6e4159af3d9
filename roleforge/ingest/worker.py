"""A parse worker (`python -m roleforge.ingest.worker`): parses the chunks an ingest sends it on stdin and answers
on stdout, until stdin closes. Light to start: no Prefect, MLflow, SQLAlchemy or pandas."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from roleforge.data_contracts.feedback import RoleSpellings
from roleforge.ingest.frames import encode_chunk, read_frame, write_frame
from roleforge.ingest.readers import read_span
from roleforge.ingest.rows import parse_lines
from roleforge.storage.staging import Staging


class _WithoutPandas:
    """An import hook that finds no pandas (see light_worker)."""

    @staticmethod
    def find_spec(name: str, *_: Any) -> None:
        if name.partition(".")[0] == "pandas":
            raise ModuleNotFoundError("a parse worker does not import pandas", name=name)


def light_worker() -> None:
    """Keep pandas out of this process, which never uses it: pyarrow imports it (a large part of a worker's start)
    only to check whether the lists it converts are pandas objects, and takes it as not installed when the import
    fails."""
    import sys

    if "pandas" not in sys.modules and _WithoutPandas not in sys.meta_path:
        sys.meta_path.insert(0, _WithoutPandas)


def serve_parse_requests() -> None:
    """A parse worker: parse_lines on each request read from stdin, its ParsedChunk (or the error) written to
    stdout, until stdin closes (the ingest finished, or died). Anything else printed goes to stderr."""
    import sys
    import traceback

    light_worker()
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    while (header := read_frame(requests)) is not None:
        request, data = orjson.loads(header), read_frame(requests)
        try:
            if request["span"] is not None:
                data = read_span(*request["span"])
            staging = None
            if request["staging"] is not None:
                directory, layout, target = request["staging"]
                staging = Staging(directory and Path(directory), tuple(map(tuple, layout)), target)
            # The staging file belongs to the ingest that inserts it, not to this worker.
            chunk = parse_lines(request["source"], request["first_line"], data or b"", RoleSpellings(request["roles"]),
                                staging, os.getppid())
            frames = [encode_chunk(chunk)] + ([] if chunk.copy is None else [chunk.copy])
        except Exception as error:  # the ingest raises it as one line; the traceback goes to stderr
            traceback.print_exc()
            last = request["first_line"] + request["lines"] - 1
            message = " ".join(f"{type(error).__name__}: {error}".split())
            frames = [orjson.dumps({
                "status": "error", "error": f"{request['source']} lines {request['first_line']}-{last}: {message}"})]
        for frame in frames:
            write_frame(answers, frame)
        answers.flush()


if __name__ == "__main__":
    serve_parse_requests()
    # Every answer is flushed and every staging file closed: leave without the interpreter's teardown, which frees a
    # worker's millions of objects one by one while the ingest waits for it to exit, as multiprocessing's children do.
    import sys

    sys.stderr.flush()
    os._exit(0)
