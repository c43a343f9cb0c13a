"""Model cards: the Markdown file that ships next to each bundled ONNX model, written from the facts, not by hand.

::

    python -m model_export.commands.model_card MODEL.pt MODEL.onnx --eval REPORT.json [--eval REPORT2.json ...] \\
        --command "invsr-train ..." [--notes "..." | --notes-file NOTES.md] -o resources/models/NAME.md

It reads the architecture, parameter count, data, steps and wall time from the model file that ``invsr-train``
wrote, the export check from the ONNX file's metadata, and the Set5 / Set14 figures from ``invsr-eval`` reports
(each report's protocol and the bicubic baseline measured in the same run are shown beside them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from invsr_desktop.engine import model_metadata as keys
from invsr_desktop.engine.model_files import read_metadata
from invsr_desktop.engine.quality import QUALITY_KEY, Quality


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h ({seconds / 60:.0f} min)"


def losses(cfg: dict[str, Any]) -> str:
    return ", ".join(f"{name} ({spec.get('type')}, weight {spec.get('weight')})" for name, spec in cfg.get("loss", {}).items())


def check_lines(onnx_meta: dict[str, str]) -> list[str]:
    """The export checks recorded in the file: ONNX Runtime against PyTorch on an odd-sized input."""
    checks = json.loads(onnx_meta.get(keys.CHECK, "[]"))
    return [
        f"- {c['what']}: input {'x'.join(map(str, c['input']))}, max |diff| {c['max_abs_diff']:.2e}"
        + (f" (PSNR {c['psnr_db']:.1f} dB)" if "psnr_db" in c else "")  # the diffusion export records no PSNR
        for c in checks
    ] or ["- not recorded"]


def eval_rows(report: dict[str, Any]) -> list[str]:
    """One Markdown table row per set: backend PSNR / SSIM against bicubic in the same run."""
    rows = []
    given = report.get("params_given") or {}
    protocol = report["protocol"] + "".join(f", {k}={v}" for k, v in sorted(given.items()))  # e.g. noise=0
    for s in report["sets"]:
        m = s["mean"]
        rows.append(
            f"| {s['name']} | x{report['scale']} | {protocol} | **{m['psnr']:.2f} / {m['ssim']:.4f}** "
            f"| {m['bicubic_psnr']:.2f} / {m['bicubic_ssim']:.4f} | {m['psnr'] - m['bicubic_psnr']:+.2f} dB |"
        )
    return rows


def perception_rows(report: dict[str, Any], seconds_per_mp: float | None) -> list[str]:
    """The perception-distortion rows of a report that scored ST-LPIPS or NIQE (issue 17's table): per set, this
    model's PSNR-Y / SSIM, ST-LPIPS and NIQE beside bicubic's from the same run."""
    def figure(mean: dict[str, Any], key: str, digits: int) -> str:
        return "-" if mean.get(key) is None else f"{mean[key]:.{digits}f}"

    rows = []
    for s in report["sets"]:
        m = s["mean"]
        if m.get("stlpips") is None and m.get("niqe") is None:
            continue
        speed = "-" if seconds_per_mp is None else f"{seconds_per_mp:.2g}"
        rows.append(
            f"| {s['name']} x{report['scale']} | {report['protocol']} | {m['psnr']:.2f} / {m['ssim']:.4f} "
            f"| {figure(m, 'stlpips', 3)} | {figure(m, 'niqe', 2)} | {speed} "
            f"| {m['bicubic_psnr']:.2f} / {m['bicubic_ssim']:.4f}, {figure(m, 'bicubic_stlpips', 3)}, "
            f"{figure(m, 'bicubic_niqe', 2)} |"
        )
    return rows


def perception_section(reports: list[dict[str, Any]], onnx_meta: dict[str, str]) -> list[str]:
    """The card's "Perception and distortion" table, or nothing where no report scored perception. Speed is the
    ``invsr.quality`` metadata's seconds per output megapixel (``quality_metadata --backend``), where recorded."""
    quality = Quality.parse(onnx_meta.get(QUALITY_KEY))
    speed = quality.seconds_per_mp if quality else None
    rows = [row for report in reports for row in perception_rows(report, speed)]
    if not rows:
        return []
    return [
        "## Perception and distortion",
        "",
        "| set | protocol | PSNR-Y / SSIM | ST-LPIPS (alex, vST0.0) | NIQE | s / MP | bicubic (same run): "
        "PSNR-Y / SSIM, ST-LPIPS, NIQE |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Lower ST-LPIPS and NIQE are better. ST-LPIPS is the shift-tolerant LPIPS (Ghildyal & Liu, ECCV 2022) from "
        "the `stlpips-pytorch` wheel's weights, not the LPIPS of published tables; NIQE uses this project's "
        "pristine fit. s / MP: seconds per output megapixel through the app's engine, on the machine that "
        "recorded it.",
        "",
    ]


def metric_notes(reports: list[dict[str, Any]]) -> list[str]:
    """What the reports say of LPIPS and ST-LPIPS, each statement once; a report run with ``--no-lpips`` ("not
    requested") does not hide what another report of the same card scored."""
    lines: list[str] = []
    if not reports:
        return lines
    for key, absent in (("lpips", "LPIPS: not computed"), ("stlpips", "ST-LPIPS: not computed")):
        said = dict.fromkeys(r.get(key) or absent for r in reports)
        lines += ["", *([text for text in said if text != "not requested"] or [absent])]
    return lines


def render(model_file: Path, onnx_file: Path, reports: list[dict[str, Any]], command: str, notes: str,
           export_command: str = "") -> str:
    ckpt = torch.load(model_file, map_location="cpu", weights_only=True)
    meta, cfg = ckpt.get("meta", {}), ckpt.get("config", {})
    onnx_meta = read_metadata(onnx_file)
    data = cfg.get("data", {})
    train = cfg.get("train", {})
    lines = [
        f"# {onnx_meta.get('invsr.name', onnx_file.stem)}",
        "",
        f"`{onnx_file.name}`: backend `{onnx_meta.get('invsr.backend')}`, scale x{onnx_meta.get('invsr.scale')}, "
        f"{onnx_file.stat().st_size / 1e6:.1f} MB, {onnx_meta.get('invsr.precision', 'fp32')}.",
        "",
        "## Architecture",
        "",
        f"- `{ckpt['arch']}` with {json.dumps(ckpt.get('arch_kwargs', {}), sort_keys=True)}",
        f"- {meta.get('parameters', 0):,} parameters",
        "",
        "## Training",
        "",
        f"- Data: {', '.join(Path(f).name for f in data.get('folders', []))} (HR images; "
        f"{data.get('val_count', 0)} held out for validation), {data.get('degradation', '?')} degradation, "
        f"{data.get('patch_size')} px HR patches, batch {data.get('batch_size')}",
        f"- Losses: {losses(cfg)}",
        f"- Optimiser: {train.get('optimizer')} lr {train.get('lr')}, {train.get('scheduler')} schedule over "
        f"{train.get('total_steps')} steps, EMA {train.get('ema_decay')} (the exported weights are the EMA)",
        f"- Trained: **{meta.get('step')} steps**, {_hours(float(meta.get('wall_time_s', 0)))} of wall time on a "
        f"2-core CPU; validation PSNR-Y on the held-out images: {meta.get('val_psnr', float('nan')):.2f} dB",
        f"- Torch {meta.get('torch')}, saved {meta.get('saved')}",
        "",
        "Reproduce (from the repository root; `--resume auto` continues a stopped run exactly):",
        "",
        "```bash",
        command,
        export_command or f"invsr-export {model_file.name} -o {onnx_file.name} --name \"{onnx_meta.get('invsr.name', '')}\"",
        "```",
        "",
        "## Export check",
        "",
        *check_lines(onnx_meta),
        "",
        "## Evaluation (`invsr-eval`, Y channel of BT.601, `scale` pixels shaved, MATLAB bicubic LR)",
        "",
        "| set | scale | protocol | this model PSNR / SSIM | bicubic (same run) | gain |",
        "|---|---|---|---|---|---|",
    ]
    for report in reports:
        lines += eval_rows(report)
    lines += ["", "Protocols: " + "; ".join(sorted({f"`{r['protocol']}`: {r['protocol_description']}" for r in reports}))]
    lines += [*metric_notes(reports), "", *perception_section(reports, onnx_meta)]
    if notes:
        lines += ["## Notes", "", notes, ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_export.commands.model_card", description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="the model file invsr-train wrote (model_<arch>_x<scale>.pt)")
    p.add_argument("onnx", type=Path, help="the exported ONNX file")
    p.add_argument("--eval", type=Path, action="append", default=[], help="an invsr-eval report.json")
    p.add_argument("--command", required=True, help="the exact training command")
    notes = p.add_mutually_exclusive_group()
    notes.add_argument("--notes", default="", help="free text appended as a Notes section")
    notes.add_argument("--notes-file", type=Path, help="a Markdown file whose text is the Notes section")
    p.add_argument("--export-command", default="", help="the export command, where it is not invsr-export "
                   "(INN: python -m model_export.export_inn ...)")
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args(argv)
    if args.notes and Path(args.notes).is_file():  # a card once shipped "/tmp/innz/notes.md" as its notes
        p.error(f"--notes is the text itself; for the file {args.notes} use --notes-file")
    notes = args.notes_file.read_text(encoding="utf-8").strip() if args.notes_file else args.notes
    reports = [json.loads(path.read_text()) for path in args.eval]
    card = render(args.model, args.onnx, reports, args.command, notes, args.export_command)
    args.output.write_text(card, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
