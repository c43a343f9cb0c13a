"""Run logs: ``log.jsonl`` (every field), ``log.csv`` (fixed columns) and ``curves.png`` (loss and validation
PSNR against the step). On resume, rows after the resumed step (written after the last checkpoint by a run that
was killed) are dropped so the logs describe exactly one history."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

CSV_COLUMNS = ["step", "loss", "lr", "it_s", "val_psnr", "wall_time_s"]


class RunLogger:
    def __init__(self, out_dir: str | os.PathLike, resume_step: int | None = None):
        self.dir = Path(out_dir)
        self.jsonl = self.dir / "log.jsonl"
        self.csv = self.dir / "log.csv"
        self.png = self.dir / "curves.png"
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and self.jsonl.exists():
            with open(self.jsonl, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line:
                        row = json.loads(line)
                        if row.get("step", 0) <= resume_step:
                            self.rows.append(row)
        self._rewrite()

    def _rewrite(self) -> None:
        with open(self.jsonl, "w", encoding="utf-8") as f:
            for row in self.rows:
                f.write(json.dumps(row) + "\n")
        with open(self.csv, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            for row in self.rows:
                w.writerow(self._csv_row(row))

    @staticmethod
    def _csv_row(row: dict) -> list:
        out = []
        for c in CSV_COLUMNS:
            v = row.get(c)
            out.append("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v))
        return out

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        with open(self.csv, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(self._csv_row(row))

    def plot(self, title: str = "") -> None:
        """Redraw ``curves.png`` (written atomically)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        loss = [(r["step"], r["loss"]) for r in self.rows if r.get("loss") is not None]
        val = [(r["step"], r["val_psnr"]) for r in self.rows if r.get("val_psnr") is not None]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        if loss:
            xs, ys = zip(*loss)
            ax1.plot(xs, ys, lw=0.8, color="tab:blue", alpha=0.5, label="loss")
            k = max(1, len(ys) // 50)
            if k > 1:  # a moving average once there are many rows
                sm = [sum(ys[max(0, i - k + 1) : i + 1]) / len(ys[max(0, i - k + 1) : i + 1]) for i in range(len(ys))]
                ax1.plot(xs, sm, lw=1.5, color="tab:blue", label=f"mean of {k}")
            if min(ys) > 0 and max(ys) / min(ys) > 20:
                ax1.set_yscale("log")
            ax1.legend()
        ax1.set_xlabel("step")
        ax1.set_ylabel("training loss")
        ax1.grid(alpha=0.3)
        val = [(s, p) for s, p in val if math.isfinite(p)]
        if val:
            xs, ys = zip(*val)
            ax2.plot(xs, ys, marker="o", ms=3, color="tab:green")
            best = max(range(len(ys)), key=ys.__getitem__)
            ax2.set_title(f"best {ys[best]:.3f} dB at step {xs[best]}", fontsize=9)
        ax2.set_xlabel("step")
        ax2.set_ylabel("validation PSNR-Y (dB)")
        ax2.grid(alpha=0.3)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        tmp = self.png.with_name(".curves.tmp.png")
        fig.savefig(tmp, dpi=90)
        plt.close(fig)
        os.replace(tmp, self.png)
