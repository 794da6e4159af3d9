"""Disk use under ROLEFORGE_HOME by kind of state: what `roleforge status` shows and `roleforge gc` holds to its bound."""

from __future__ import annotations

import os
from pathlib import Path

from roleforge.training.reference_store import KEPT_REFERENCES

DISK_KINDS = ("store", "checkpoints", "snapshots", "artifacts", "archive", "reference_logps", "serving", "other")
# The home's top-level entries by kind; the rest (the converted base model, Prefect's and Hugging Face's homes,
# quarantine, audit, status) is other. MLflow's database goes with its artifacts.
KIND_OF_ENTRY = {"checkpoints": "checkpoints", "datasets": "snapshots", "mlartifacts": "artifacts", "mlflow.db": "artifacts",
                 "adapters": "artifacts", "registry-cache": "artifacts", "archive": "archive", "serving": "serving"}


def tree_size(path: Path) -> int:
    """Bytes in the files at or under `path`, symbolic links not followed; 0 when it is gone."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
    except FileNotFoundError:
        return 0
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except FileNotFoundError:  # removed while we walk (a training rotating its checkpoints)
                pass
    return total


def disk_use(home: Path, store_file: Path | None = None) -> dict[str, int]:
    """Bytes per kind (DISK_KINDS) and their total. `store_file`, a SQLite store, counts with its journal files
    wherever it lives; a store on a server counts nothing here."""
    use = dict.fromkeys(DISK_KINDS, 0)
    store_names = (store_file.name, f"{store_file.name}-wal", f"{store_file.name}-shm", f"{store_file.name}-journal") if store_file else ()
    if store_file is not None and store_file.parent.resolve() != home.resolve():
        use["store"] += sum(tree_size(store_file.with_name(name)) for name in store_names)
        store_names = ()
    entries = list(os.scandir(home)) if home.is_dir() else []
    for entry in entries:
        if entry.name == "checkpoints" and entry.is_dir(follow_symlinks=False):
            for child in os.scandir(entry.path):
                kind = "reference_logps" if child.name.startswith(KEPT_REFERENCES) else "checkpoints"
                use[kind] += tree_size(Path(child.path))
            continue
        kind = "store" if entry.name in store_names else KIND_OF_ENTRY.get(entry.name, "other")
        use[kind] += tree_size(Path(entry.path))
    use["total"] = sum(use[kind] for kind in DISK_KINDS)
    return use


def human_bytes(count: int) -> str:
    """1536 -> '1.5 KB'; powers of 1024, one decimal."""
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
