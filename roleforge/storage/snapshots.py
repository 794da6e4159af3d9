"""Dataset snapshots: a role's labeled pairs frozen as train / held-out Parquet files in a folder named by their
content hash, and the `PreferenceDataset` that names one in every run that uses it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from roleforge.data_contracts.preference import PreferencePair, Split


class PreferenceDataset(BaseModel):
    """A role's labeled pairs, split and frozen as a snapshot; the snapshot hash names it in every run."""

    role: str
    snapshot_hash: str
    path: str
    train_pairs: int
    held_out_pairs: int
    by_source: dict[str, int]
    conflicts: int
    abstained: int = 0
    skipped: dict[str, int] = {}
    capped: dict[str, int] = {}
    new_pairs: int | None = None  # training pairs new since the role's last training, once the trigger has looked
    feedback_watermark: int = 0  # the newest feedback id the snapshot was labeled from
    skip_reason: str | None = None

    @property
    def ready(self) -> bool:
        return self.skip_reason is None


def split_of(role: str, prompt: str, held_out_fraction: float) -> Split:
    """Held-out by prompt hash: a prompt (and so every pair on it) never moves between splits as data grows."""
    bucket = int(hashlib.sha256(f"{role}\x00{prompt}".encode()).hexdigest()[:8], 16) / 0x100000000
    return "held_out" if bucket < held_out_fraction else "train"


def write_snapshot(pairs: list[PreferencePair], role: str, held_out_fraction: float, datasets_dir: Path) -> tuple[str, Path]:
    """Freeze the pairs as train/held-out Parquet files in a directory named by their content hash."""
    import pandas as pd

    records = [{**pair.model_dump(), "pair_id": pair.pair_id, "split": split_of(role, pair.prompt, held_out_fraction)}
               for pair in pairs]
    digest = hashlib.sha256(json.dumps(records, sort_keys=True, default=list).encode()).hexdigest()[:16]
    directory = datasets_dir / role / digest
    if not (directory / "held_out.parquet").exists():
        staging = directory.with_name(f".{digest}.partial")
        staging.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame(records, columns=[*PreferencePair.model_fields, "pair_id", "split"])
        frame["feedback_ids"] = frame["feedback_ids"].map(list)
        for split in ("train", "held_out"):
            frame[frame["split"] == split].to_parquet(staging / f"{split}.parquet", index=False)
        if directory.exists():  # another process froze the same content meanwhile
            shutil.rmtree(staging)
        else:
            staging.replace(directory)
    return digest, directory


def load_split(dataset_path: str | Path, split: Split) -> list[dict[str, Any]]:
    """The pairs of one split of a snapshot, as plain records."""
    import pandas as pd

    return pd.read_parquet(Path(dataset_path) / f"{split}.parquet").to_dict("records")
