"""``invsr-train``: train a model family from a TOML config, resumably, on one process or under torchrun.

    invsr-train esrgan --config model_export/configs/esrgan_psnr_x4.toml --out runs/esrgan_psnr_x4 --resume auto
    torchrun --nproc_per_node=2 -m model_export.train esrgan --config ... (same arguments)

The run folder gets ``latest.pt`` (everything needed to resume exactly), ``model_<arch>_x<scale>.pt`` (EMA weights,
config, metadata: what ``invsr-export`` and ``invsr-eval`` read), ``log.jsonl``, ``log.csv``, ``curves.png`` and
``config.json`` (the effective config). SIGINT / SIGTERM, ``--max-minutes`` and ``--stop-at`` stop after the
current step with a checkpoint; ``--resume auto`` then continues as if the run had never stopped.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import signal
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

# On a shared CPU, OpenMP threads that spin while waiting collapse throughput (measured: 2-thread training at a
# quarter of its speed when other processes hold the cores); passive waiting keeps it near the uncontended speed.
# Only a default: set OMP_WAIT_POLICY yourself to override. (It must be set before torch starts OpenMP.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model_export.training import checkpoint as ckpt_io  # noqa: E402
from model_export.training import distributed as dist_utils  # noqa: E402
from model_export.training.config import ConfigError, flatten, load_config  # noqa: E402
from model_export.training.models import available_models, get_model_class  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="invsr-train",
        description="Train a super-resolution model (runs unchanged under torchrun for DDP).",
    )
    p.add_argument("model", help=f"model family: {', '.join(available_models())}")
    p.add_argument("--config", required=True, help="TOML config file, or the name of a packaged config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=3e-4 (repeatable; value parsed as TOML)")
    p.add_argument("--resume", metavar="auto|PATH",
                   help="'auto': continue from OUT/latest.pt when it exists; PATH: continue from that checkpoint")
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/<config name>)")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop cleanly (with a checkpoint) after this many minutes of this session")
    p.add_argument("--stop-at", type=int, default=0, metavar="STEP",
                   help="stop cleanly (with a checkpoint) on reaching this step, schedule unchanged")
    return p


class _StopRequest:
    """SIGINT / SIGTERM set a flag (the loop saves and exits after the current step); a second one aborts."""

    def __init__(self) -> None:
        self.reason = ""
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum, frame) -> None:  # noqa: ANN001
        if self.reason:
            self.restore()
            raise KeyboardInterrupt
        self.reason = f"signal {signal.Signals(signum).name}"


def _threads(cfg: dict, world: int) -> int:
    n = cfg["train"]["threads"]
    if n > 0:
        return n
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, world))


def _device(cfg: dict) -> str:
    d = cfg["train"]["device"]
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d not in ("cpu", "cuda"):
        raise ConfigError(f"config key 'train.device' must be auto, cpu or cuda, not {d!r}")
    return d


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ConfigError as exc:
        print(f"invsr-train: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"invsr-train: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    """One training run: config, resume point, data, model, then :class:`_Run`'s loop to the end or a stop."""
    t_session = time.perf_counter()
    cfg = _config(args)
    info, device = _runtime(cfg)
    say = _printer(info.is_main)
    out_dir = Path(args.out or Path("runs") / cfg["name"])
    state = _resume_state(args, cfg, out_dir, say)

    seed = cfg["seed"]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    store, dataset, val_files, val_set = _data(cfg, info.is_main)
    model = get_model_class(args.model)(cfg, device, info)
    step, wall_base = _restore(model, state, info, seed, say)

    loop = _Run(args, cfg, model, info, out_dir, val_set, len(val_files), t_session, wall_base)
    loop.open(state, step)
    d = cfg["data"]
    say(f"invsr-train {args.model}: {cfg['network']['arch']} x{cfg['scale']}, {loop.n_params:,} parameters; "
        f"{len(store)} training images ({store.nbytes / 2**20:.0f} MiB), "
        f"{len(val_files)} held out; batch {d['batch_size']} x {d['patch_size']} px; "
        f"{info.world} process(es), {torch.get_num_threads()} thread(s) each, {device}; "
        f"{'resuming at step ' + str(step) if state is not None else 'from scratch'}; run folder {out_dir}")

    from model_export.data import build_train_loader

    loader = build_train_loader(dataset, d["batch_size"], start_step=step, rank=info.rank, world=info.world,
                                num_workers=d["num_workers"], seed=seed, prefetch_factor=d["prefetch_factor"])
    step, reason = loop.train(loader, step)
    summary = (f"stopped at step {step}/{cfg['train']['total_steps']} ({reason}); wall time "
               f"{loop.wall_now() / 60:.1f} min"
               + (f"; last validation PSNR-Y {loop.last_val:.3f} dB" if loop.last_val is not None else "")
               + f"; checkpoint {out_dir / 'latest.pt'}")  # fmt: skip
    # The loader's workers and the DDP-wrapped nets go before the process group does: a gloo group whose last
    # reference died in the interpreter's teardown aborted a rank now and then ("terminate called without an
    # active exception", once in a CI run of the DDP test after the barrier of shutdown was added).
    del loader, loop, model
    gc.collect()
    say(summary)
    dist_utils.shutdown(info)
    return 0


def _config(args: argparse.Namespace) -> dict:
    """The run's config: the family's defaults, the file, then ``--set``; its ``model`` must be the command's."""
    try:
        model_cls = get_model_class(args.model)
    except KeyError as exc:
        raise ConfigError(exc.args[0]) from exc
    cfg = load_config(args.config, args.set, model_cls.config_defaults)
    if cfg["model"] and cfg["model"] != args.model:
        raise ConfigError(f"config key 'model' is {cfg['model']!r} but the command asks for {args.model!r}")
    cfg["model"] = args.model
    return cfg


def _runtime(cfg: dict) -> tuple[dist_utils.DistInfo, torch.device]:
    """The process group (if any), the device and the torch settings the run computes with."""
    device_kind = _device(cfg)
    info = dist_utils.init(device_kind)
    device = torch.device(info.device)
    if device_kind == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # training patches have one shape: let cuDNN pick the fastest kernels
    torch.set_num_threads(_threads(cfg, info.world))
    if device_kind == "cpu":
        torch.set_flush_denormal(True)  # denormal activations / gradients in the 0.1-scaled blocks are slow on x86
    return info, device


def _resume_state(args: argparse.Namespace, cfg: dict, out_dir: Path, say) -> dict | None:
    """The training state ``--resume`` names (``auto``: the run folder's ``latest.pt`` if any), checked to be a
    training checkpoint of this family; a config that differs from the checkpoint's is said, key by key. A run
    folder that already holds a run needs ``--resume``: nothing is overwritten by accident."""
    ckpt_path = None
    if args.resume == "auto":
        if (out_dir / "latest.pt").exists():
            ckpt_path = out_dir / "latest.pt"
    elif args.resume:
        ckpt_path = Path(args.resume)
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"checkpoint {str(ckpt_path)!r} does not exist")
    elif (out_dir / "latest.pt").exists():
        raise ConfigError(f"{out_dir} already holds a run (latest.pt): use --resume auto to continue it, or another --out")
    if ckpt_path is None:
        return None
    state = ckpt_io.load(ckpt_path)
    if state.get("format") != ckpt_io.TRAIN_FORMAT:
        raise ConfigError(f"{ckpt_path} is not a training checkpoint (format {state.get('format')!r})")
    if state["family"] != args.model:
        raise ConfigError(f"{ckpt_path} was trained as {state['family']!r}, not {args.model!r}")
    old, new = flatten(state["config"]), flatten(cfg)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        say("warning: config differs from the checkpoint's in: "
            + ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed))
    return state


def _restore(model, state: dict | None, info, seed: int, say) -> tuple[int, float]:
    """Load ``state`` into ``model`` and the random generators; returns (step, wall time so far). A fresh run seeds
    each rank apart; a resumed one continues each rank's generators exactly where the world size is the same."""
    if state is None:
        _seed_rank(seed, info.rank)
        return 0, 0.0
    model.load_state_dict(state["model"])
    ranks = state.get("rng_ranks") or [state["rng"]]
    if len(ranks) == info.world:
        ckpt_io.set_rng_state(ranks[info.rank])
    else:
        say(f"warning: the checkpoint holds random states for {len(ranks)} process(es), not {info.world}: "
            "the run continues, but not exactly as it would have")
        ckpt_io.set_rng_state(ranks[0])
        _seed_rank(seed + int(state["step"]), info.rank)
    return int(state["step"]), float(state["wall_time_s"])


class _Run:
    """The training loop and what it keeps between steps: the loss sums of the log interval, the timing (log,
    validation and saving are left out of the iterations per second), the validation scores, and the saving of
    ``latest.pt`` and the model file. Every rank runs it; only the main one logs, validates and saves."""

    def __init__(self, args, cfg: dict, model, info, out_dir: Path, val_set, val_count: int, t_session: float,
                 wall_base: float):
        self.args, self.cfg, self.model, self.info, self.out_dir = args, cfg, model, info, out_dir
        self.val_set, self.val_count = val_set, val_count
        self.t_session, self.wall_base = t_session, wall_base  # this process's start; the earlier sessions' time
        self.log_cfg = cfg["log"]
        self.n_params = model.num_parameters()
        self.logger = None
        self.perceptual = None
        self.last_val: float | None = None
        self.best_val: float | None = None
        self.sums: dict[str, float] = {}
        self.count = 0

    def wall_now(self) -> float:
        return self.wall_base + (time.perf_counter() - self.t_session)

    def open(self, state: dict | None, step: int) -> None:
        """The run folder's log (continued on resume), its config.json, and the ST-LPIPS scorer if asked for."""
        if state is not None:
            self.best_val = state["log"].get("best_val_psnr")
        if not self.info.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        from model_export.training.logger import RunLogger

        self.logger = RunLogger(self.out_dir, resume_step=step if state is not None else None)
        with open(self.out_dir / "config.json", "w", encoding="utf-8") as f:
            json.dump(self.cfg, f, indent=2)
        if self.log_cfg["val_stlpips"]:
            from model_export.stlpips import ImageScorer

            self.perceptual = ImageScorer("alex")

    def train(self, loader, step: int) -> tuple[int, str]:
        """Steps from ``step`` to the config's total or a stop; returns (the last step, why it stopped)."""
        total = self.cfg["train"]["total_steps"]
        stop = _StopRequest()
        stop.install()
        pbar = _progress(self.info.is_main and self.log_cfg["progress"], total, step)
        self.t_mark, self.steps_mark, self.excluded = time.perf_counter(), 0, 0.0
        reason = "finished"
        it = None
        try:
            it = iter(loader)
            while step < total:
                stats = self.model.optimize(next(it), step)
                step += 1
                self._count(stats, step)
                if pbar is not None:
                    pbar.update(1)
                stopping = self._stopping(stop, step)
                self._report(step, total, stats, stopping, stop.reason, pbar)
                if step % self.log_cfg["save_every"] == 0 or step == total or stopping:
                    self._save_all_ranks(step)  # every rank gets here at the same step (stopping is agreed)
                if stopping:
                    reason = stop.reason
                    break
        finally:
            if pbar is not None:
                pbar.close()
            stop.restore()
            del it
        if self.logger is not None:
            self.logger.plot(self._title())
        return step, reason

    def _title(self) -> str:
        return f"{self.cfg['name']}: {self.cfg['network']['arch']} x{self.cfg['scale']}"

    def _count(self, stats: dict[str, float], step: int) -> None:
        self.count += 1
        self.steps_mark += 1
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        if not math.isfinite(stats["loss"]):
            raise FloatingPointError(f"loss is {stats['loss']} at step {step}; not saving this state")

    def _stopping(self, stop: _StopRequest, step: int) -> bool:
        """Whether the run stops after this step (a signal, --max-minutes, --stop-at), agreed by every rank."""
        args = self.args
        if not stop.reason:
            if args.max_minutes and time.perf_counter() - self.t_session >= args.max_minutes * 60:
                stop.reason = f"--max-minutes {args.max_minutes:g}"
            elif args.stop_at and step >= args.stop_at:
                stop.reason = f"--stop-at {args.stop_at}"
        stopping = dist_utils.any_flag(bool(stop.reason), self.info)
        if stopping and not stop.reason:
            stop.reason = "another process stopped"
        return stopping

    def _report(self, step: int, total: int, stats: dict[str, float], stopping: bool, why: str, pbar) -> None:
        """The log row of this step where one is due (the interval's mean losses, the validation), logged and plotted."""
        log_cfg = self.log_cfg
        do_log = step % log_cfg["log_every"] == 0 or step == total or stopping
        do_val = (log_cfg["val_every"] > 0 and step % log_cfg["val_every"] == 0) or step == total
        do_val = do_val or (stopping and why.startswith("--"))  # a planned stop ends with a score
        row = self._log_row(step, stats) if do_log and self.count else None
        if do_val and self.info.is_main and self.val_set is not None:
            row = self._validation_row(step, stats, row)
        if row is not None and self.logger is not None:
            t0 = time.perf_counter()
            self.logger.log(row)
            if pbar is not None:
                pbar.set_postfix(_postfix(row, self.last_val), refresh=False)
            if do_val:
                self.logger.plot(self._title())
            self.excluded += time.perf_counter() - t0

    def _log_row(self, step: int, stats: dict[str, float]) -> dict[str, Any]:
        """The interval's mean of every logged term (averaged over ranks) and its iterations per second."""
        means = {k: v / self.count for k, v in self.sums.items()}
        if self.info.enabled:
            keys = sorted(k for k in means if k != "lr")
            t = torch.tensor([means[k] for k in keys], dtype=torch.float64, device=self.model.device)
            torch.distributed.all_reduce(t)
            means.update({k: float(v) / self.info.world for k, v in zip(keys, t.tolist())})
        now = time.perf_counter()
        it_s = self.steps_mark / max(1e-9, now - self.t_mark - self.excluded)
        row = {"step": step, "loss": means["loss"], "lr": stats["lr"], "it_s": round(it_s, 4), "val_psnr": None,
               "wall_time_s": round(self.wall_now(), 1)}  # fmt: skip
        row.update({k: v for k, v in means.items() if k not in row})
        self.t_mark, self.steps_mark, self.excluded = now, 0, 0.0
        self.sums, self.count = {}, 0
        return row

    def _validation_row(self, step: int, stats: dict[str, float], row: dict[str, Any] | None) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.last_val, extras = _validate(self.model, self.val_set, self.cfg["scale"], self.perceptual)
        self.best_val = self.last_val if self.best_val is None else max(self.best_val, self.last_val)
        extras.update(self.model.validation_extras(self.val_set))
        self.excluded += time.perf_counter() - t0
        row = row or {"step": step, "loss": None, "lr": stats["lr"], "it_s": None,
                      "wall_time_s": round(self.wall_now(), 1)}  # fmt: skip
        row["val_psnr"] = round(self.last_val, 4)
        row.update({k: round(v, 4) for k, v in extras.items()})
        return row

    def _save_all_ranks(self, step: int) -> None:
        rng_ranks = dist_utils.gather_objects(ckpt_io.get_rng_state(), self.info)
        if self.info.is_main:
            t0 = time.perf_counter()
            self._save(step, rng_ranks)
            self.excluded += time.perf_counter() - t0

    def _save(self, step: int, rng_ranks: list) -> None:
        """``latest.pt`` (and a kept copy every ``log.keep_every`` steps) and the model file, atomically."""
        args, cfg, out_dir = self.args, self.cfg, self.out_dir
        payload = _train_state(args.model, cfg, self.model, step, self.wall_now(), rng_ranks, self.best_val,
                               self.last_val)  # fmt: skip
        ckpt_io.atomic_save(payload, out_dir / "latest.pt")
        if self.log_cfg["keep_every"] > 0 and step % self.log_cfg["keep_every"] == 0:
            ckpt_io.atomic_save(payload, out_dir / f"ckpt_{step:08d}.pt")
        meta = {"step": step, "wall_time_s": round(self.wall_now(), 1), "val_psnr": self.last_val,
                "val_images": self.val_count, "parameters": self.n_params}  # fmt: skip
        exported = _model_file(args.model, cfg, self.model, meta)
        ckpt_io.atomic_save(exported, out_dir / f"model_{exported['arch']}_x{cfg['scale']}.pt")


def _data(cfg: dict, is_main: bool):
    """``(store, dataset, val_files, val_set)``: the training patches from the config's folders less the held-out
    images, and (on the main process) the held-out validation set."""
    from model_export.data import Degrader, ImageStore, SRPatchDataset, ValidationSet
    from model_export.data.images import find_images, split_holdout

    d, scale, seed = cfg["data"], cfg["scale"], cfg["seed"]
    train_files, val_files = split_holdout(find_images(d["folders"], d["extensions"]), d["val_count"])
    store = ImageStore(train_files, min_size=d["patch_size"], what="training")
    degrader = Degrader(d["degradation"], scale, d["round_lr"], d["real_photo"])
    dataset = SRPatchDataset(store, d["patch_size"], scale, degrader, seed=seed, augment=d["augment"],
                             grey_fraction=d["grey_fraction"])  # fmt: skip
    val_set = None
    if is_main and val_files:
        val_degrader = Degrader(d["val_degradation"], scale, True, d["real_photo"])
        val_set = ValidationSet(ImageStore(val_files, what="validation"), scale, val_degrader, seed=seed)
    return store, dataset, val_files, val_set


def _train_state(family: str, cfg: dict, model, step: int, wall_time_s: float, rng_ranks: list,
                 best_val: float | None, last_val: float | None) -> dict:
    """What ``latest.pt`` holds: everything a resumed run needs to continue exactly (see training.checkpoint)."""
    d = cfg["data"]
    return {
        "format": ckpt_io.TRAIN_FORMAT,
        "family": family,
        "step": step,
        "wall_time_s": wall_time_s,
        "config": cfg,
        "model": model.state_dict(),
        "rng": rng_ranks[0],
        "rng_ranks": rng_ranks,  # one per DDP process
        "data": {"next_sample": step * d["batch_size"], "batch_size": d["batch_size"], "seed": cfg["seed"]},
        "log": {"best_val_psnr": best_val, "last_val_psnr": last_val},
    }


def _model_file(family: str, cfg: dict, model, meta: dict) -> dict:
    """What ``model_<arch>_x<scale>.pt`` holds: the EMA weights and what the exporters and model cards read."""
    exp = model.export_payload()
    d = cfg["data"]
    return {
        "format": ckpt_io.MODEL_FORMAT,
        "family": family,
        "arch": exp["arch"],
        "arch_kwargs": exp["arch_kwargs"],
        "scale": cfg["scale"],
        "params_ema": exp["params_ema"],
        **{k: v for k, v in exp.items() if k not in ("arch", "arch_kwargs", "params_ema")},  # a family's own
        "config": cfg,
        "meta": {
            **meta,
            "data": [str(f) for f in d["folders"]],
            "degradation": d["degradation"],
            "torch": str(torch.__version__),
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }


def _seed_rank(seed: int, rank: int) -> None:
    """Give each DDP process its own random stream after the (identical) model initialisation, for families that
    draw noise in their step; rank 0 keeps the single-process stream. (The data does not use these generators.)"""
    if rank > 0:
        mixed = (seed * 1_000_003 + 7919 * rank) % 2**32
        random.seed(mixed)
        np.random.seed(mixed)
        torch.manual_seed(mixed)


def _validate(model, val_set, scale: int, perceptual) -> tuple[float, dict[str, float]]:
    """``(PSNR-Y, extra figures)``: ``val_stlpips`` when ``perceptual`` scores the same outputs."""
    from model_export.training.validation import validate

    result = validate(model.run_eval, val_set, scale, perceptual)
    return result["psnr"], ({"val_stlpips": result["stlpips"]} if "stlpips" in result else {})


def _printer(enabled: bool):
    def say(msg: str) -> None:
        if enabled:
            try:
                from tqdm import tqdm

                tqdm.write(msg, file=sys.stderr)
            except ImportError:  # pragma: no cover
                print(msg, file=sys.stderr)

    return say


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, smoothing=0.05,
                mininterval=1.0 if interactive else 60.0, file=sys.stderr)


def _postfix(row: dict, last_val: float | None) -> dict:
    out = {}
    if row.get("loss") is not None:
        out["loss"] = f"{row['loss']:.4f}"
    out["lr"] = f"{row['lr']:.2e}"
    if last_val is not None:
        out["psnr"] = f"{last_val:.2f}"
    return out


if __name__ == "__main__":
    warnings.simplefilter("default")
    sys.exit(main())
