"""Training configuration: TOML files over built-in defaults, ``--set key=value`` overrides, strict keys.

Every key a config may hold is in :data:`DEFAULTS` (a model family adds its own through ``config_defaults``).
A key that is not there is an error naming it, so a typo never silently trains with a default. A few tables are
open (deep-merged, their keys checked elsewhere): ``network`` (checked against the architecture's constructor),
``loss`` (each term checked against the loss registry) and ``data.real_photo`` (handed to the degradation as is).

``--set`` values are parsed as TOML values (``3e-4``, ``true``, ``[1, 2]``, ``"text"``); a value that is not
valid TOML is taken as a string, so ``--set data.folders=/some/dir`` works (a string given where the default is a
list becomes a one-item list).

Relative paths in ``data.folders`` are relative to the current directory (run from the repository root).
"""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from invsr_desktop.engine.errors import InvsrError

DEFAULTS: dict[str, Any] = {
    "name": "",  # run name; the default output folder is runs/<name> (or the config file's stem)
    "model": "",  # model family; when set, it must agree with the <model> argument of invsr-train
    "seed": 0,
    "scale": 4,
    "network": {"arch": "rrdbnet"},  # open: the architecture's keyword arguments
    "data": {
        "folders": [],
        "extensions": [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"],
        "patch_size": 128,  # HR patch side; the LR patch is patch_size / scale
        "batch_size": 16,  # global batch (split across DDP processes)
        "degradation": "bicubic",  # bicubic | real_photo
        "round_lr": True,  # quantise the LR to 8 bit, like a real image
        "augment": True,  # random flips and 90-degree rotations
        "grey_fraction": 0.0,  # share of training pairs made grey (R = G = B), for black-and-white input
        "num_workers": 1,
        "prefetch_factor": 2,
        "val_count": 10,  # images held out of data.folders for validation (evenly spaced by sorted name)
        "val_degradation": "bicubic",  # the evaluation protocol's LR
        "real_photo": {},  # open: RealPhotoDegradation config
    },
    "train": {
        "total_steps": 100_000,
        "optimizer": "adam",  # adam | adamw
        "lr": 2e-4,
        "betas": [0.9, 0.99],
        "weight_decay": 0.0,
        "scheduler": "cosine",  # cosine | multistep | constant
        "warmup_steps": 0,
        "milestones": [],  # multistep: steps where lr is multiplied by gamma
        "gamma": 0.5,
        "min_lr": 1e-7,  # cosine: final lr
        "restarts": [],  # cosine: steps where a new cosine cycle begins (warm restarts, SGDR), ending at total_steps
        "restart_weights": [],  # cosine: each restart's peak lr as a fraction of lr (default 1 each)
        "ema_decay": 0.999,  # 0 disables the EMA (the EMA copy is then the net itself)
        "ema_warmup": True,  # decay min(ema_decay, (1 + n) / (10 + n)) over the first updates
        "grad_clip": 0.0,  # max gradient norm, 0 = off
        "threads": 0,  # torch threads per process; 0 = CPUs / processes
        "device": "auto",  # auto | cpu | cuda
    },
    "loss": {"pixel": {"type": "l1", "weight": 1.0}},  # open: name -> {type, weight, options...}
    "log": {
        "log_every": 100,  # steps between log rows
        "val_every": 2000,  # steps between validations (0 = only at the end)
        "save_every": 1000,  # steps between checkpoints
        "keep_every": 0,  # also keep ckpt_<step>.pt every N steps (0 = only latest.pt)
        "progress": True,  # tqdm progress bar
        "val_stlpips": False,  # also score validation with ST-LPIPS (alex; the [train] extra's weights)
    },
}

OPEN_TABLES = {"network", "loss", "data.real_photo"}

PACKAGED_CONFIGS = "model_export"  # configs/*.toml inside it (package data)


class ConfigError(InvsrError, ValueError):
    """A configuration problem, with the offending key in the message (a ValueError too, as callers catch it)."""


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _coerce(key: str, default: Any, value: Any) -> Any:
    """``value`` checked against the type of ``default`` (ints widen to floats, a string to a one-item list)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be true or false, not {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r} must be a number, not {value!r}")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"config key {key!r} must be an integer, not {value!r}")
        return int(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r} must be a string, not {value!r}")
        return value
    if isinstance(default, list):
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r} must be a list, not {value!r}")
        return value
    return value


def apply_values(cfg: dict, values: dict, schema: dict, prefix: str = "", source: str = "") -> None:
    """Write ``values`` into ``cfg`` following ``schema`` (the defaults); unknown keys raise ConfigError.

    Open tables (:data:`OPEN_TABLES`) are deep-merged without a schema (set a loss term's weight to 0 to drop it).
    """
    where = f" (in {source})" if source else ""
    for k, v in values.items():
        key = f"{prefix}{k}"
        if key in OPEN_TABLES:
            if not isinstance(v, dict):
                raise ConfigError(f"config key {key!r} must be a table{where}")
            cfg[k] = deep_merge(cfg.get(k) or {}, v)
            continue
        if k not in schema:
            raise ConfigError(f"unknown config key {key!r}{where}; known keys here: {', '.join(sorted(schema))}")
        if isinstance(schema[k], dict):
            if not isinstance(v, dict):
                raise ConfigError(f"config key {key!r} must be a table{where}")
            apply_values(cfg[k], v, schema[k], key + ".", source)
        else:
            cfg[k] = _coerce(key, schema[k], v)


def parse_set(item: str) -> dict:
    """``"train.lr=3e-4"`` -> ``{"train": {"lr": 3e-4}}`` (the value parsed as TOML, else a plain string)."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def find_config(name_or_path: str) -> Path:
    """A config file path, or the name of a packaged config (``esrgan_psnr_x4``) in ``model_export/configs``."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    packaged = resources.files(PACKAGED_CONFIGS) / "configs" / (p.name if p.suffix == ".toml" else p.name + ".toml")
    if packaged.is_file():
        return Path(str(packaged))
    raise ConfigError(f"config file {name_or_path!r} not found (not a file, nor a packaged config)")


def load_config(
    path: str | None = None,
    sets: Iterable[str] = (),
    extra_defaults: dict | None = None,
    data: dict | None = None,
) -> dict:
    """Defaults (plus a family's ``extra_defaults``) <- TOML file ``path`` (or the dict ``data``) <- ``--set`` items."""
    schema = deep_merge(DEFAULTS, extra_defaults or {})
    cfg = copy.deepcopy(schema)
    if path is not None:
        file = find_config(path)
        with open(file, "rb") as f:
            try:
                values = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{file}: {exc}") from exc
        apply_values(cfg, values, schema, source=str(file))
        if not cfg["name"]:
            cfg["name"] = file.stem
    if data is not None:
        apply_values(cfg, data, schema, source="dict")
    for item in sets:
        apply_values(cfg, parse_set(item), schema, source=f"--set {item}")
    check(cfg)
    return cfg


def check(cfg: dict) -> None:
    """Value checks that need more than the type."""
    scale, d, t = cfg["scale"], cfg["data"], cfg["train"]
    if scale < 1:
        raise ConfigError(f"config key 'scale' must be >= 1, not {scale}")
    if d["patch_size"] % scale:
        raise ConfigError(f"config key 'data.patch_size' ({d['patch_size']}) must be a multiple of scale ({scale})")
    if d["batch_size"] < 1:
        raise ConfigError("config key 'data.batch_size' must be >= 1")
    if t["optimizer"] not in ("adam", "adamw"):
        raise ConfigError(f"config key 'train.optimizer' must be adam or adamw, not {t['optimizer']!r}")
    if t["scheduler"] not in ("cosine", "multistep", "constant"):
        raise ConfigError(f"config key 'train.scheduler' must be cosine, multistep or constant, not {t['scheduler']!r}")
    _check_restarts(t)
    if not 0.0 <= t["ema_decay"] < 1.0:
        raise ConfigError("config key 'train.ema_decay' must be in [0, 1)")
    if "arch" not in cfg["network"]:
        raise ConfigError("config key 'network.arch' is missing")
    for name, term in cfg["loss"].items():
        if not isinstance(term, dict) or "type" not in term:
            raise ConfigError(f"config key 'loss.{name}' must be a table with a 'type'")


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (to compare configs)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_restarts(t: dict) -> None:
    restarts, weights = t["restarts"], t["restart_weights"]
    if restarts and t["scheduler"] != "cosine":
        raise ConfigError("config key 'train.restarts' needs train.scheduler = \"cosine\"")
    if list(restarts) != sorted(set(restarts)) or any(not t["warmup_steps"] < r < t["total_steps"] for r in restarts):
        raise ConfigError("config key 'train.restarts' must be increasing steps between warmup_steps and total_steps")
    if weights and len(weights) != len(restarts):
        raise ConfigError("config key 'train.restart_weights' needs one weight per restart")
