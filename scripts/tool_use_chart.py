"""Bar chart of `roleforge evaluate tool-use --json` results: base vs champion on the three rates.

    roleforge evaluate tool-use --prompts roleforge/sample/tool_use_heldout.jsonl --model base --json | tail -1 > base.json
    roleforge evaluate tool-use --prompts roleforge/sample/tool_use_heldout.jsonl --model champion --json | tail -1 > champion.json
    python scripts/tool_use_chart.py base.json champion.json docs/tool-use-compliance.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RATES = (("thought_rate", "Thought: prefix"), ("json_valid_rate", "valid JSON action"), ("full_compliance_rate", "full compliance"))


def main(base_file: str, champion_file: str, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = {name: json.loads(Path(path).read_text().strip().splitlines()[-1]) for name, path in
               (("base", base_file), ("champion", champion_file))}
    figure, axis = plt.subplots(figsize=(7, 3.4))
    width = 0.38
    for offset, (name, color) in zip((-width / 2, width / 2), (("base", "#9e9e9e"), ("champion", "#2e7d32"))):
        values = [results[name][key] * 100 for key, _ in RATES]
        bars = axis.bar([i + offset for i in range(len(RATES))], values, width, label=f"{name} (n={results[name]['n']})", color=color)
        axis.bar_label(bars, fmt="%.0f%%", fontsize=8)
    axis.set_xticks(range(len(RATES)), [label for _, label in RATES])
    axis.set_ylim(0, 110)
    axis.set_ylabel("% of held-out requests")
    axis.set_title("tool-agent on held-out tool-use requests")
    axis.legend(loc="center left", fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:4])
