"""Ingest on its own: new feedback files into the store, bad rows into quarantine."""

from __future__ import annotations

from prefect import flow

from roleforge.config.settings import load_settings
from roleforge.flows.params import IngestRun
from roleforge.tasks.ingest import IngestReport, ingest_feedback


@flow(name="ingest")
def ingest(run: IngestRun = IngestRun()) -> IngestReport:
    return ingest_feedback(run.paths or [str(load_settings().path("inbox"))])


if __name__ == "__main__":
    from roleforge.sample import SAMPLE_FEEDBACK

    print(ingest(IngestRun(paths=[str(SAMPLE_FEEDBACK)])).model_dump_json(indent=2))
