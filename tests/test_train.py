"""invsr-train: configs, a tiny training run, exact resume, stopping (signal, time box), DDP with 2 processes."""

import json
import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model_export.archs import build_arch
from model_export.train import main
from model_export.training import checkpoint as ckpt_io
from model_export.training.config import ConfigError, load_config, parse_set
from model_export.training.ema import EMA
from model_export.training.optim import LRSchedule
from model_export.training.validation import psnr_y

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_imgs")
    rng = np.random.default_rng(0)
    for i in range(8):
        base = (rng.random((12, 14, 3)) * 255).astype(np.uint8)
        Image.fromarray(base).resize((48, 40 + i), Image.BICUBIC).save(root / f"im{i}.png")
    return root


def _args(images, out, *extra):
    return ["esrgan", "--config", "test_tiny", "--set", f"data.folders={json.dumps(str(images))}", "--out", str(out), *extra]


def _run(images, out, *extra):
    assert main(_args(images, out, *extra)) == 0


def _weights(path):
    state = ckpt_io.load(path)
    return state, state["model"]["net_g"], state["model"]["ema_g"]["params"]


# ---- config ---------------------------------------------------------------------------------------------------


def test_unknown_key_is_an_error(tmp_path, images, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nlrr = 1e-4\n')
    with pytest.raises(ConfigError, match="'train.lrr'"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="'data.patchsize'"):
        load_config("test_tiny", ["data.patchsize=32"])
    with pytest.raises(ConfigError, match="'bogus'"):
        load_config("test_tiny", ["bogus=1"])
    assert main(["esrgan", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "train.lrr" in capsys.readouterr().err
    # an option the architecture does not have, a loss option, a bad type
    assert main(_args(images, tmp_path / "r", "--set", "network.num_feats=3")) == 2
    assert "num_feats" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="loss.pixel.eps"):
        from model_export.training.losses import build_loss

        build_loss("pixel", {"type": "l1", "eps": 1})
    with pytest.raises(ConfigError, match="'train.lr' must be a number"):
        load_config("test_tiny", ['train.lr="fast"'])
    assert main(["nosuchfamily", "--config", "test_tiny"]) == 2
    assert "nosuchfamily" in capsys.readouterr().err


def test_set_values():
    assert parse_set("train.lr=3e-4") == {"train": {"lr": 3e-4}}
    assert parse_set("data.folders=/a/b") == {"data": {"folders": "/a/b"}}
    assert parse_set('data.folders=["x", "y"]') == {"data": {"folders": ["x", "y"]}}
    cfg = load_config("test_tiny", ["data.folders=/a/b", "train.lr=1", "data.round_lr=false", "network.residual=nearest"])
    assert cfg["data"]["folders"] == ["/a/b"] and cfg["train"]["lr"] == 1.0 and cfg["data"]["round_lr"] is False
    assert cfg["network"]["residual"] == "nearest" and cfg["network"]["num_feat"] == 8


def test_packaged_configs_load():
    cfg = load_config("esrgan_psnr_x4")
    assert cfg["scale"] == 4 and cfg["model"] == "esrgan" and cfg["data"]["folders"]
    net_kwargs = {k: v for k, v in cfg["network"].items() if k != "arch"}
    net = build_arch(cfg["network"]["arch"], scale=cfg["scale"], **net_kwargs)
    assert 2e5 < sum(p.numel() for p in net.parameters()) < 2e6


def test_every_packaged_config_passes_its_family_schema():
    """A misspelt key in a shipped config fails here, not an hour into a run: each one loads with its family's
    defaults (unknown keys raise) and its network builds."""
    from model_export.training.models import get_model_class

    folder = Path(__file__).resolve().parents[1] / "model_export" / "configs"
    names = sorted(p.stem for p in folder.glob("*.toml"))
    assert {"esrgan_psnr_x4", "diffusion_prior_k01_x4", "diffusion_gan_k01_x4"} <= set(names)
    for name in names:
        family = tomllib.loads((folder / f"{name}.toml").read_text())["model"]
        cfg = load_config(name, [], get_model_class(family).config_defaults)
        kwargs = {k: v for k, v in cfg["network"].items() if k != "arch"}
        if kwargs:  # the GAN stage takes its generator's options from gan.init_from
            build_arch(cfg["network"]["arch"], scale=cfg["scale"], **kwargs)


# ---- pieces -------------------------------------------------------------------------------------------------------


def test_schedule():
    base = dict(lr=1.0, total_steps=100, warmup_steps=10, milestones=[50, 80], gamma=0.5, min_lr=0.0)
    cos = LRSchedule({**base, "scheduler": "cosine"})
    assert cos.lr(0) == pytest.approx(0.1) and cos.lr(9) == pytest.approx(1.0)
    assert cos.lr(10) == pytest.approx(1.0) and cos.lr(55) == pytest.approx(0.5) and cos.lr(100) == pytest.approx(0.0)
    sgdr = LRSchedule({**base, "scheduler": "cosine", "restarts": [60], "restart_weights": [0.5]})
    assert sgdr.lr(55) == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 50)))  # the first cycle ends at 60
    assert sgdr.lr(59) > 0 and sgdr.lr(60) == pytest.approx(0.5) and sgdr.lr(80) == pytest.approx(0.25)
    assert sgdr.lr(100) == pytest.approx(0.0)
    for bad in (["train.restarts=[60]", "train.scheduler=\"multistep\""], ["train.restarts=[200000]"],
                ["train.restarts=[60]", "train.restart_weights=[0.5, 0.5]"]):
        with pytest.raises(ConfigError, match="restart"):
            load_config("test_tiny", bad)
    ms = LRSchedule({**base, "scheduler": "multistep"})
    assert [ms.lr(s) for s in (20, 49, 50, 80, 99)] == [1.0, 1.0, 0.5, 0.25, 0.25]


def test_ema():
    net = torch.nn.Linear(2, 1)
    ema = EMA(net, decay=0.5, warmup=False)
    with torch.no_grad():
        net.weight.add_(2.0)
    before = ema.module.weight.clone()
    ema.update(net)
    assert torch.allclose(ema.module.weight, 0.5 * before + 0.5 * net.weight)
    assert not ema.module.weight.requires_grad


def test_psnr_y():
    a = np.zeros((10, 10, 3), np.uint8)
    b = a.copy()
    b[..., :] = 10  # Y differs by 10 * (65.481 + 128.553 + 24.966) / 255 everywhere
    dy = 10 * 219.0 / 255
    assert psnr_y(a, b, 2) == pytest.approx(10 * np.log10(255**2 / dy**2))


# ---- training runs ----------------------------------------------------------------------------------------------


def test_train_and_exact_resume(images, tmp_path):
    full, parts = tmp_path / "full", tmp_path / "parts"
    _run(images, full)
    _run(images, parts, "--stop-at", "3")
    state3 = ckpt_io.load(parts / "latest.pt")
    assert state3["step"] == 3
    # a killed run may have logged past its last checkpoint: those rows must go on resume
    with open(parts / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "loss": 9.0, "lr": 0.0}) + "\n")
    _run(images, parts, "--resume", "auto")

    sa, net_a, ema_a = _weights(full / "latest.pt")
    sb, net_b, ema_b = _weights(parts / "latest.pt")
    assert sa["step"] == sb["step"] == 6
    for k in net_a:
        assert torch.equal(net_a[k], net_b[k]), k
        assert torch.equal(ema_a[k], ema_b[k]), k
    assert any(not torch.equal(net_a[k], ema_a[k]) for k in net_a)
    opt_a, opt_b = sa["model"]["opt_g"]["state"], sb["model"]["opt_g"]["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)
    assert sb["wall_time_s"] > state3["wall_time_s"]  # accumulated across the resume

    rows = [json.loads(x) for x in (parts / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    rows_full = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [r["loss"] for r in rows_full]
    assert [r["val_psnr"] for r in rows] == [r["val_psnr"] for r in rows_full]
    csv_lines = (parts / "log.csv").read_text().splitlines()
    assert csv_lines[0] == "step,loss,lr,it_s,val_psnr,wall_time_s" and len(csv_lines) == 7
    assert [r["val_psnr"] is not None for r in rows] == [False, False, True, False, False, True]
    assert (parts / "curves.png").stat().st_size > 1000

    # the small model file: EMA weights + config + metadata, loadable with weights_only=True
    model_file = ckpt_io.load(full / "model_rrdbnet_x4.pt")
    assert model_file["format"] == "invsr-model/1" and model_file["arch"] == "rrdbnet" and model_file["scale"] == 4
    assert model_file["meta"]["step"] == 6 and model_file["meta"]["val_psnr"] is not None
    net = build_arch(model_file["arch"], **model_file["arch_kwargs"])
    net.load_state_dict(model_file["params_ema"])
    assert all(torch.equal(net.state_dict()[k], ema_a[k]) for k in ema_a)
    torch.load(full / "latest.pt", weights_only=True)  # the whole training checkpoint too


def test_existing_run_needs_resume(images, tmp_path, capsys):
    _run(images, tmp_path / "r", "--stop-at", "1")
    assert main(_args(images, tmp_path / "r")) == 2
    assert "--resume auto" in capsys.readouterr().err


def test_validation_scores_st_lpips_when_asked(images, tmp_path):
    pytest.importorskip("stlpips_pytorch", reason="the [train] extra's stlpips-pytorch wheel is not installed")
    _run(images, tmp_path / "run", "--set", "log.val_stlpips=true", "--stop-at", "3")
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    scored = [r for r in rows if r.get("val_psnr") is not None]
    assert scored and all(0.0 < r["val_stlpips"] < 1.0 for r in scored)


def test_max_minutes_stops_with_checkpoint(images, tmp_path):
    _run(images, tmp_path / "r", "--max-minutes", "0.000001", "--set", "train.total_steps=1000")
    state = ckpt_io.load(tmp_path / "r" / "latest.pt")
    assert state["step"] == 1


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("WORLD_SIZE", None)
    return env


def test_sigterm_saves_and_exits(images, tmp_path):
    out = tmp_path / "sig"
    cmd = [sys.executable, "-m", "model_export.train", *_args(images, out, "--set", "train.total_steps=100000",
                                                              "--set", "log.save_every=100000")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log = out / "log.jsonl"
        deadline = time.time() + 40
        while not (log.exists() and log.read_text()):
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "no training step within 40 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "SIGTERM" in output
    state = ckpt_io.load(out / "latest.pt")
    assert 0 < state["step"] < 100000
    last = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert last["step"] == state["step"]


def test_ddp_two_processes(images, tmp_path):
    single, ddp, parts = tmp_path / "single", tmp_path / "ddp", tmp_path / "parts"
    _run(images, single)

    def torchrun(out, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "model_export.train", *_args(images, out, *extra)]
        res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "2 process(es)" in res.stderr, res.stderr
        assert res.stderr.count("stopped at step") == 1, res.stderr  # only rank 0 speaks
        return res

    torchrun(ddp)
    _, net_s, ema_s = _weights(single / "latest.pt")
    sd, net_d, ema_d = _weights(ddp / "latest.pt")
    assert sd["step"] == 6
    # same global batch of the same samples, gradients averaged over ranks: the same training up to rounding
    for k in net_s:
        diff = (net_s[k] - net_d[k]).abs().max().item()
        assert diff < 1e-6, (k, diff)
        assert torch.allclose(ema_s[k], ema_d[k], atol=1e-6), k
    assert len((ddp / "log.jsonl").read_text().splitlines()) == 6
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())
    # each process has its own random stream, and each is saved
    rng = sd["rng_ranks"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])

    # stopped and resumed under DDP: exactly the uninterrupted DDP run
    torchrun(parts, "--stop-at", "3")
    torchrun(parts, "--resume", "auto")
    _, net_p, ema_p = _weights(parts / "latest.pt")
    for k in net_d:
        assert torch.equal(net_p[k], net_d[k]) and torch.equal(ema_p[k], ema_d[k]), k


def test_compact_checkpoint_keeps_weights_and_resumes_adam_in_float32():
    """A compacted resume point: Adam's moments in bfloat16 on disk, back in float32 when loaded, weights exact."""
    from model_export.training.checkpoint import compact

    net = torch.nn.Linear(8, 4)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    net(torch.randn(3, 8)).square().mean().backward()
    opt.step()
    state = {"step": 1, "model": {"net": net.state_dict(), "opt": opt.state_dict()}}
    small = compact(state)
    assert small["model"]["opt"]["state"][0]["exp_avg"].dtype == torch.bfloat16
    assert torch.equal(small["model"]["net"]["weight"], net.state_dict()["weight"])  # weights untouched
    fresh = torch.optim.Adam(net.parameters(), 1e-3)
    fresh.load_state_dict(small["model"]["opt"])
    moment = fresh.state_dict()["state"][0]["exp_avg"]
    assert moment.dtype == torch.float32
    assert torch.allclose(moment, opt.state_dict()["state"][0]["exp_avg"], rtol=1e-2, atol=1e-6)


def test_single_process_cuda_run_names_a_cuda_device():
    """Without torchrun the CUDA device is cuda:0, not the CPU (the first GPU run failed on exactly this)."""
    from model_export.training.distributed import init

    assert init("cuda").device == "cuda:0" and init("cpu").device == "cpu"
    assert not init("cuda").enabled
