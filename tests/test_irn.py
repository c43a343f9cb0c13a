"""The IRN-style invertible net: exact invertibility, Haar, 1x1 inverses for export, the ``inn`` training family
(losses, noise schedule, exact resume) and the two-file ONNX export checked against PyTorch."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model_export.archs import arch_parameters, build_arch, count_parameters, get_arch
from model_export.archs.irn import IRNet, haar_down, haar_up
from model_export.train import main as train_main
from model_export.training import checkpoint as ckpt_io
from model_export.training.config import ConfigError, load_config
from model_export.training.models.inn import noise_scale, quantize_ste

TINY = dict(hidden=4, blocks=(1, 2), depth=2)


def _perturbed(scale: int, std: float = 0.03, dtype=torch.float32, **kw) -> IRNet:
    """A net whose couplings and 1x1 convs are far from the identity (the zero-initialised last convs too)."""
    torch.manual_seed(scale)
    net = build_arch("irn", scale=scale, **kw).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * std)
    return net.eval()


def test_registry_and_options():
    assert get_arch("irn") is IRNet
    assert {"scale", "hidden", "blocks", "depth", "clamp", "use_1x1"} <= set(arch_parameters("irn"))
    with pytest.raises(ValueError, match="scale 2 or 4"):
        IRNet(scale=3)
    with pytest.raises(ValueError, match="one per x2 stage"):
        IRNet(scale=4, hidden=(8, 8, 8))


def test_haar_is_exactly_invertible_and_its_low_band_is_the_box_mean():
    x = torch.rand(2, 5, 6, 10, dtype=torch.float64)
    y = haar_down(x)
    assert y.shape == (2, 20, 3, 5)
    assert torch.allclose(y[:, :5], torch.nn.functional.avg_pool2d(x, 2))
    assert torch.allclose(haar_up(y), x, atol=1e-15)


@pytest.mark.parametrize("scale", [2, 4])
def test_inverse_of_forward_is_identity(scale):
    net = _perturbed(scale)
    x = torch.rand(2, 3, 8 * scale, 6 * scale)
    with torch.no_grad():
        lr, z = net(x)
        assert lr.shape == (2, 3, 8, 6) and z.shape == (2, 3 * scale * scale - 3, 8, 6)
        assert (net.inverse(lr, z) - x).abs().max() < 1e-4
        net.freeze_inverse()  # the export path: precomputed inverse matrices
        assert (net.inverse(lr, z) - x).abs().max() < 1e-4
    net64 = _perturbed(scale, dtype=torch.float64)
    x64 = x.double()
    with torch.no_grad():
        assert (net64.inverse(*net64(x64)) - x64).abs().max() < 1e-10
    # and the other way round: forward(inverse(lr, z)) == (lr, z)
    lr, z = torch.rand(1, 3, 5, 7, dtype=torch.float64), torch.randn(1, 3 * scale * scale - 3, 5, 7, dtype=torch.float64)
    with torch.no_grad():
        lr2, z2 = net64(net64.inverse(lr, z))
    assert torch.allclose(lr2, lr, atol=1e-10) and torch.allclose(z2, z, atol=1e-10)


def test_untrained_net_is_the_haar_transform():
    net = build_arch("irn", scale=4).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        lr, _ = net(x)
        assert torch.allclose(lr, torch.nn.functional.avg_pool2d(x, 4), atol=1e-6)
        sr = net.upscale(lr)
    assert sr.shape == x.shape


def test_grown_net_computes_the_small_nets_function():
    small = _perturbed(4, hidden=[4, 6], blocks=[1, 2], depth=2)
    big = build_arch("irn", scale=4, hidden=[6, 8], blocks=[2, 3], depth=2).eval()
    assert big.grow_from(small.state_dict()) == len(small.state_dict())
    x = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        (lr_s, z_s), (lr_b, z_b) = small(x), big(x)
        assert torch.allclose(lr_s, lr_b, atol=1e-6) and torch.allclose(z_s, z_b, atol=1e-6)
        assert torch.allclose(small.inverse(lr_s, z_s), big.inverse(lr_b, z_b), atol=1e-6)
    # the new hidden units are live (fresh incoming weights), only cut off from the old units' inputs
    w = big.stages[1].couplings[0].f[0].weight
    assert w[6:].abs().sum() > 0
    assert torch.count_nonzero(big.stages[1].couplings[0].f[2].weight[:, 6:]) == 0


def test_grow_refuses_a_net_that_does_not_fit():
    small = build_arch("irn", scale=4, hidden=[6, 8], blocks=[1, 1], depth=2)
    with pytest.raises(ValueError, match="does not fit"):
        build_arch("irn", scale=4, hidden=[4, 8], blocks=[1, 1], depth=2).grow_from(small.state_dict())
    with pytest.raises(ValueError, match="not in this network"):
        build_arch("irn", scale=4, hidden=[6, 8], blocks=[1, 1], depth=2).grow_from(
            build_arch("irn", scale=4, hidden=[6, 8], blocks=[2, 1], depth=2).state_dict())


def test_default_config_size():
    from model_export.training.models import get_model_class

    cfg = load_config("inn_x4", (), get_model_class("inn").config_defaults)
    assert cfg["model"] == "inn" and cfg["network"]["arch"] == "irn" and cfg["scale"] == 4
    kw = {k: v for k, v in cfg["network"].items() if k != "arch"}
    assert 1e5 < count_parameters(build_arch("irn", scale=4, **kw)) < 1e6
    cfg2 = load_config("inn_x2", (), get_model_class("inn").config_defaults)
    kw2 = {k: v for k, v in cfg2["network"].items() if k != "arch"}
    assert cfg2["scale"] == 2 and count_parameters(build_arch("irn", scale=2, **kw2)) > 2e4


def test_noise_schedule_and_quantizer():
    assert noise_scale(0, 10, 20, 0.5) == 0.0 and noise_scale(9, 10, 20, 0.5) == 0.0
    assert noise_scale(19, 10, 20, 0.5) == pytest.approx(0.25)
    assert noise_scale(10_000, 10, 20, 0.5) == 0.5 and noise_scale(10, 10, 0, 0.5) == 0.5
    x = torch.tensor([0.3, 1.2, -0.1], requires_grad=True)
    q = quantize_ste(x)
    assert torch.allclose(q, torch.tensor([round(0.3 * 255) / 255, 1.0, 0.0]))
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones(3))


# ---- the training family ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("inn_imgs")
    rng = np.random.default_rng(0)
    for i in range(6):
        base = (rng.random((10, 12, 3)) * 255).astype(np.uint8)
        Image.fromarray(base).resize((48, 40 + i), Image.BICUBIC).save(root / f"im{i}.png")
    return root


def _args(images, out, *extra):
    sets = [
        f"data.folders={json.dumps(str(images))}", "network.hidden=4", "network.blocks=[1, 1]", "network.depth=2",
        "inn.noise_warmup=2", "inn.noise_ramp=2", "data.patch_size=16", "data.num_workers=0",
        "train.total_steps=6", "train.threads=1", "train.warmup_steps=0", "data.batch_size=2", "data.val_count=1",
        "log.log_every=1", "log.val_every=3", "log.save_every=3", "log.progress=false",
    ]  # fmt: skip
    return ["inn", "--config", "inn_x4", *[a for s in sets for a in ("--set", s)], "--out", str(out), *extra]


def test_train_resume_and_export(images, tmp_path):
    full, parts = tmp_path / "full", tmp_path / "parts"
    assert train_main(_args(images, full)) == 0
    assert train_main(_args(images, parts, "--stop-at", "3")) == 0
    assert train_main(_args(images, parts, "--resume", "auto")) == 0
    a, b = ckpt_io.load(full / "latest.pt"), ckpt_io.load(parts / "latest.pt")
    assert a["step"] == b["step"] == 6
    for k, v in a["model"]["net"].items():
        assert torch.equal(v, b["model"]["net"][k]), k
    rows = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    assert [r["sigma"] for r in rows] == [0.0, 0.0, 0.25, 0.5, 0.5, 0.5]
    assert {"l_pixel", "l_lr_pixel", "l_guide", "l_distr"} <= set(rows[0])
    assert rows[2]["val_psnr"] is not None and 10 < rows[2]["val_round_trip"] < 99
    assert 20 < rows[2]["val_small_psnr"] < 60  # near bicubic's small image (a scale or range mistake gives < 10)

    from model_export.export_inn import export_inn, load_inn

    net, state = load_inn(full / "model_irn_x4.pt")
    assert state["family"] == "inn"
    result = export_inn(net, tmp_path / "onnx", "tiny_x4", trained_on="test images", check_size=(7, 9))
    assert result.down.name == "inn_tiny_x4_down.onnx" and result.up.name == "inn_tiny_x4_up.onnx"
    assert result.max_diff_down < 1e-4 and result.max_diff_up < 1e-4 and result.round_trip < 1e-4

    import onnx

    props = {p.key: p.value for p in onnx.load(str(result.up)).metadata_props}
    assert props["invsr.backend"] == "inn" and props["invsr.scale"] == "4" and props["invsr.direction"] == "up"
    assert props["invsr.name"] == "tiny_x4" and props["invsr.z_channels"] == "45"
    names = [i.name for i in onnx.load(str(result.up)).graph.input]
    assert names == ["lr", "z", "temperature"]
    ops = {n.op_type for n in onnx.load(str(result.up)).graph.node}
    assert not {"Inverse", "MatrixInverse"} & ops
    # a training checkpoint loads too
    net2, _ = load_inn(full / "latest.pt")
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in net2.state_dict().items())


def test_init_from_grows_a_trained_small_run(images, tmp_path):
    small = tmp_path / "small"
    assert train_main(_args(images, small, "--stop-at", "3")) == 0
    grow = ["--set", "network.hidden=[4, 6]", "--set", "network.blocks=[2, 2]",
            "--set", f"inn.init_from={json.dumps(str(small / 'model_irn_x4.pt'))}", "--stop-at", "1"]
    assert train_main(_args(images, tmp_path / "big", *grow)) == 0
    from model_export.training.models import get_model_class

    cls = get_model_class("inn")
    cfg = load_config("inn_x4", ["network.hidden=[4, 6]", "network.blocks=[2, 2]", "network.depth=2",
                                 f"inn.init_from={json.dumps(str(small / 'latest.pt'))}"], cls.config_defaults)
    model = cls(cfg, torch.device("cpu"), _nodist())  # a latest.pt works too; EMA starts as the grown net
    x = torch.rand(1, 3, 16, 16)
    net, _ = __import__("model_export.export_inn", fromlist=["load_inn"]).load_inn(small / "latest.pt")
    with torch.no_grad():
        assert torch.allclose(model.eval_net()(x)[0], net(x)[0], atol=1e-6)
    bad = load_config("inn_x4", ["network.hidden=[2, 2]", f"inn.init_from={json.dumps(str(small / 'latest.pt'))}"],
                      cls.config_defaults)
    with pytest.raises(ConfigError, match="inn.init_from"):
        cls(bad, torch.device("cpu"), _nodist())


def test_a_start_file_that_left_the_tree_is_named_with_the_command_that_brings_it_back(tmp_path):
    from model_export.start_files import MANIFEST_NAME
    from model_export.training.models import get_model_class

    (tmp_path / MANIFEST_NAME).write_text(f'[files."gone.pt"]\ncommit = "{"0" * 40}"\nsha256 = "{"0" * 64}"\n')
    cls = get_model_class("inn")
    cfg = load_config("inn_x4", [f"inn.init_from={json.dumps(str(tmp_path / 'gone.pt'))}"], cls.config_defaults)
    with pytest.raises(ConfigError, match=r"inn.init_from.*python -m model_export.start_files get gone.pt"):
        cls(cfg, torch.device("cpu"), _nodist())


def test_config_rejects_unknown_terms_and_non_invertible_arch(images, tmp_path):
    from model_export.training.models import get_model_class

    cls = get_model_class("inn")
    cfg = load_config("inn_x4", ["loss.perceptual={type = \"l1\", weight = 1.0}"], cls.config_defaults)
    with pytest.raises(ConfigError, match="loss.perceptual"):
        cls(cfg, torch.device("cpu"), _nodist())
    cfg = load_config("inn_x4", ["network={arch = \"rrdbnet\", num_feat = 4, num_block = 1, num_grow_ch = 2}"],
                      cls.config_defaults)  # fmt: skip
    with pytest.raises(ConfigError):
        cls(cfg, torch.device("cpu"), _nodist())


def _nodist():
    from model_export.training.distributed import DistInfo

    return DistInfo()


def test_jpeg_robust_training_scores_the_round_trip_through_real_jpeg(images, tmp_path):
    out = tmp_path / "jpeg"
    extra = ["--set", "inn.jpeg_prob=1.0", "--set", "inn.jpeg_quality=[60, 80]", "--set", "inn.val_jpeg=[75]"]
    assert train_main(_args(images, out, *extra)) == 0
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    val = rows[2]
    assert 10 < val["val_round_trip_jpeg75"] < val["val_round_trip"]  # JPEG costs the round trip something
    assert 10 < val["val_bicubic_jpeg75"] < 99
    assert rows[5]["val_bicubic_jpeg75"] == val["val_bicubic_jpeg75"]  # the baseline is fixed


def test_random_jpeg_codes_the_chosen_samples_only():
    from model_export.training.models.inn import random_jpeg

    torch.manual_seed(0)
    lr = torch.rand(8, 3, 16, 16)
    assert torch.equal(random_jpeg(lr, 0.0, (50, 95)), lr)
    coded = random_jpeg(lr, 0.5, (50, 60))
    changed = [not torch.equal(coded[i], lr[i]) for i in range(8)]
    assert 0 < sum(changed) < 8
    lr.requires_grad_(True)
    random_jpeg(lr, 1.0, (50, 60)).sum().backward()
    assert float(lr.grad.abs().sum()) > 0


def test_zero_z_frac_reconstructs_that_share_of_the_samples_at_z_zero():
    """The app restores at z = 0: ``inn.zero_z_frac`` trains that path on a share of every batch."""
    from model_export.training.models.inn import _Both

    torch.manual_seed(0)
    z = torch.zeros(64, 6, 4, 4)
    net = IRNet(scale=2, hidden=4, blocks=[1], depth=2)
    assert _Both(net, True).sample_z(z, 0.0) is None
    assert bool((_Both(net, True).sample_z(z, 0.4) != 0).all())
    mixed = _Both(net, True, zero_z_frac=0.5).sample_z(z, 0.4)
    at_zero = [bool((mixed[i] == 0).all()) for i in range(64)]
    assert 16 < sum(at_zero) < 48  # whole samples, about half of them
    assert float(mixed[[not a for a in at_zero]].std()) == pytest.approx(0.4, rel=0.1)


def test_config_rejects_bad_jpeg_options():
    from model_export.training.models import get_model_class

    cls = get_model_class("inn")
    for bad in ("inn.jpeg_quality=[90, 50]", "inn.jpeg_quality=[0, 50]", "inn.jpeg_prob=1.5", "inn.zero_z_frac=-0.1"):
        cfg = load_config("inn_x4", [bad, "network.hidden=4", "network.blocks=[1, 1]"], cls.config_defaults)
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            cls(cfg, torch.device("cpu"), _nodist())


def test_a_jpeg_prenet_starts_as_the_plain_inn_and_grows_from_one():
    plain = _perturbed(4, **TINY)
    with_prenet = build_arch("irn", scale=4, **TINY, jpeg_prenet=8, jpeg_prenet_layers=3).eval()
    with_prenet.grow_from(plain.state_dict())  # the prenet's tensors are new: they keep their identity start
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        lr, z = plain(x)
        assert torch.allclose(with_prenet(x)[0], lr, atol=1e-6)
        assert torch.allclose(with_prenet.inverse(lr, z), plain.inverse(lr, z), atol=1e-6)
        for p in with_prenet.prenet.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        assert not torch.allclose(with_prenet.inverse(lr, z), plain.inverse(lr, z), atol=1e-3)  # it restores
        assert torch.allclose(with_prenet(x)[0], lr, atol=1e-6)  # the shrink is untouched
    with pytest.raises(ValueError, match="layers"):
        build_arch("irn", scale=4, jpeg_prenet=8, jpeg_prenet_layers=1)


def test_training_only_the_prenet_keeps_the_inn(images, tmp_path):
    out = tmp_path / "prenet"
    extra = ["--set", "network.jpeg_prenet=4", "--set", "network.jpeg_prenet_layers=2", "--set", "inn.jpeg_prob=1.0",
             "--set", "inn.train_only=\"prenet\""]  # fmt: skip
    assert train_main(_args(images, out, *extra, "--stop-at", "1")) == 0
    first = ckpt_io.load(out / "latest.pt")["model"]["net"]
    assert train_main(_args(images, out, *extra, "--resume", "auto")) == 0
    last = ckpt_io.load(out / "latest.pt")["model"]["net"]
    changed = {k for k, v in last.items() if not torch.equal(v, first[k])}
    assert changed and all(k.startswith("prenet.") for k in changed), changed


def test_hr_noise_adds_colour_or_grey_noise_to_the_chosen_samples_only():
    """``inn.hr_noise_prob``: the noisy photos the x4 shrinks once turned magenta are trained on."""
    from model_export.training.models.inn import add_hr_noise

    torch.manual_seed(0)
    hr = torch.full((64, 3, 32, 32), 0.5)
    assert torch.equal(add_hr_noise(hr, 0.0, 12.0), hr) and torch.equal(add_hr_noise(hr, 1.0, 0.0), hr)
    noisy = add_hr_noise(hr, 0.5, 12.0)
    touched = [not torch.equal(noisy[i], hr[i]) for i in range(64)]
    assert 16 < sum(touched) < 48
    stds = (noisy - hr).flatten(1).std(dim=1) * 255.0
    assert float(stds.max()) < 12.5 and float(stds[torch.tensor(touched)].mean()) > 3.0
    grey = [bool(torch.equal(noisy[i, 0], noisy[i, 1])) for i in range(64) if touched[i]]
    assert 0 < sum(grey) < len(grey)  # both kinds occur
    assert float(add_hr_noise(torch.ones(4, 3, 8, 8), 1.0, 12.0).max()) <= 1.0  # clamped as a saved photo is


def test_lr_colour_shift_is_the_largest_channel_mean_difference_in_levels():
    from model_export.training.models.inn import lr_colour_shift

    hr = torch.rand(1, 3, 16, 16)
    lr = torch.nn.functional.avg_pool2d(hr, 4)
    assert lr_colour_shift(lr, hr) < 1e-3
    shifted = lr + torch.tensor([0.0, -10.0, 4.0]).reshape(1, 3, 1, 1) / 255.0
    assert lr_colour_shift(shifted, hr) == pytest.approx(10.0, abs=1e-3)


def test_noise_training_scores_the_noisy_shrink(images, tmp_path):
    out = tmp_path / "noise"
    extra = ["--set", "inn.hr_noise_prob=1.0", "--set", "inn.val_hr_noise=4.0"]
    assert train_main(_args(images, out, *extra)) == 0
    val = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()][2]
    assert 0 <= val["val_lr_shift_noise"] < 50 and 10 < val["val_round_trip_noise"] < 99
    from model_export.training.models import get_model_class

    cls = get_model_class("inn")
    for bad in ("inn.hr_noise_prob=2", "inn.hr_noise_max=-1"):
        cfg = load_config("inn_x4", [bad, "network.hidden=4", "network.blocks=[1, 1]"], cls.config_defaults)
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            cls(cfg, torch.device("cpu"), _nodist())
