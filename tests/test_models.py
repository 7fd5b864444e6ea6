"""DL-US / DL-MRI factories: shapes, configs, local checkpoints only, augmentation determinism."""

from __future__ import annotations

import pytest
import torch

from her2lib import models
from her2lib.errors import ParameterError
from her2lib.train import PAPER_TRAINING
from her2lib.transforms import AugmentSpec, BatchAugmenter


def test_dl_us_shapes_and_paper_defaults():
    cfg, tc = models.DLUSConfig(), PAPER_TRAINING["dl_us"]
    assert (tc.lr, tc.weight_decay, tc.batch_size, tc.epochs, cfg.image_size) == (2e-5, 5e-2, 16, 300, 256)
    assert tc.mixup and cfg.variant == "convnextv2_tiny"
    m = models.build_dl_us(models.DLUSConfig(variant="convnextv2_atto", image_size=32)).eval()
    with torch.no_grad():
        assert m(torch.zeros(2, 1, 32, 32)).shape == (2, 2)


def test_dl_mri_shapes_stride_and_paper_defaults():
    cfg, tc = models.DLMRIConfig(), PAPER_TRAINING["dl_mri"]
    assert (tc.lr, tc.weight_decay, tc.batch_size, tc.epochs, cfg.image_size) == (4e-6, 1e-2, 16, 300, 96)
    assert not tc.mixup
    m = models.build_dl_mri(models.DLMRIConfig(image_size=16, conv1_t_stride=2)).eval()
    assert m.conv1.stride == (2, 2, 2) and m.conv1.in_channels == 1
    with torch.no_grad():
        assert m(torch.zeros(2, 1, 16, 16, 16)).shape == (2, 2)


def test_unknown_variant_and_missing_checkpoint():
    with pytest.raises(ParameterError, match="variant='convnextv2_ato' is not .*Did you mean 'convnextv2_atto'"):
        models.build_dl_us(models.DLUSConfig(variant="convnextv2_ato"))
    with pytest.raises(ParameterError, match="never downloads"):
        models.build_dl_mri(models.DLMRIConfig(checkpoint="/nonexistent/weights.pth"))


def test_local_checkpoints_load(tmp_path):
    cfg = models.DLMRIConfig(image_size=16, conv1_t_stride=2)
    src = models.build_dl_mri(cfg)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "mri.pt")
    dst = models.build_dl_mri(models.DLMRIConfig(image_size=16, conv1_t_stride=2, checkpoint=str(tmp_path / "mri.pt")))
    assert torch.equal(dst.conv1.weight, src.conv1.weight)

    # an "ImageNet-like" 3-channel, 1000-class ConvNeXt V2 file: stem adapted, head re-initialised
    import timm

    rgb = timm.create_model("convnextv2_atto", pretrained=False, num_classes=1000)
    torch.save(rgb.state_dict(), tmp_path / "atto.pth")
    us = models.build_dl_us(models.DLUSConfig(variant="convnextv2_atto", checkpoint=str(tmp_path / "atto.pth")))
    assert us.stem[0].weight.shape[1] == 1
    assert torch.allclose(us.stem[0].weight[:, 0], rgb.stem[0].weight.sum(1), atol=1e-5)


def test_config_roundtrip_and_unknown_key():
    d = models.config_to_dict(models.DLMRIConfig(conv1_t_stride=2))
    assert models.config_from_dict(d) == models.DLMRIConfig(conv1_t_stride=2)
    d["conv1_stride"] = 2
    with pytest.raises(ParameterError, match="conv1_t_stride"):
        models.config_from_dict(d)
    with pytest.raises(ParameterError, match="TrainConfig"):  # training settings are no architecture keys
        models.config_from_dict({**models.config_to_dict(models.DLMRIConfig()), "lr": 1e-3})
    with pytest.raises(ParameterError, match="config kind='dl_ct' is not supported"):
        models.config_from_dict({"kind": "dl_ct"})


@pytest.mark.parametrize("dims, size", [(2, (32, 32)), (3, (16, 16, 16))])
def test_augmentation_seeded_and_shape_preserving(dims, size):
    x = torch.randn(4, 1, *size)
    aug = BatchAugmenter(dims, size, spec=AugmentSpec(), seed=0)
    a1 = aug(x)
    aug.reseed(0)
    a2 = aug(x)
    assert a1.shape == x.shape and a1.dtype == torch.float32 and torch.equal(a1, a2)
    assert not torch.equal(a1, aug(x))  # the stream moves on
    assert torch.equal(x, x.clone())  # input untouched
    with pytest.raises(ParameterError, match="expected"):
        aug(torch.zeros(2, 1, *[s + 1 for s in size]))


def test_pretrained_imagenet_weights_are_asked_for_and_fail_clearly(monkeypatch, tmp_path):
    """``pretrained=True`` is the one download (through timm); it is never made unless asked, and without network it
    fails naming the parameter and the offline fix (timm is monkeypatched: no test touches the network)."""
    import timm

    calls = []

    def fake_create(name, pretrained=False, **kw):
        calls.append(pretrained)
        if pretrained and not kw.get("pretrained_cfg_overlay"):
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained=pretrained, **kw)

    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", fake_create)
    models.build_dl_us(models.DLUSConfig(variant="convnextv2_atto"))
    assert calls == [False]  # the default downloads nothing
    with pytest.raises(ParameterError, match=r"pretrained=True.*convnextv2_atto.*huggingface.*checkpoint=<local file>"):
        models.build_dl_us(models.DLUSConfig(variant="convnextv2_atto", pretrained=True))
    torch.save(real("convnextv2_atto", num_classes=1000).state_dict(), tmp_path / "atto.pth")
    with pytest.raises(ParameterError, match="give one of them"):
        models.build_dl_us(
            models.DLUSConfig(variant="convnextv2_atto", pretrained=True, checkpoint=str(tmp_path / "atto.pth"))
        )


def test_pretrained_false_keeps_the_config_and_fingerprints_of_earlier_runs():
    d = models.config_to_dict(models.DLUSConfig(variant="convnextv2_atto"))
    assert "pretrained" not in d  # configs (and fold fingerprints) written before the option stay the same
    assert models.config_from_dict(d) == models.DLUSConfig(variant="convnextv2_atto")
    on = models.config_to_dict(models.DLUSConfig(variant="convnextv2_atto", pretrained=True))
    assert on["pretrained"] is True and models.config_from_dict(on).pretrained is True


def test_medicalnet_style_checkpoint_loads(tmp_path):
    """A MedicalNet ``resnet_18.pth``-like file: ``module.``-prefixed keys under ``state_dict`` and a segmentation head
    (``conv_seg``) the classifier does not have; the backbone loads, the rest is skipped with a warning."""
    cfg = models.DLMRIConfig(image_size=16, conv1_t_stride=2)
    src = models.build_dl_mri(cfg)
    state = {f"module.{k}": v for k, v in src.state_dict().items() if not k.startswith("fc.")}
    state["module.conv_seg.0.weight"] = torch.zeros(32, 512, 3, 3, 3)
    torch.save({"state_dict": state}, tmp_path / "resnet_18.pth")
    with pytest.warns(UserWarning, match="skipped 1 tensors"):
        dst = models.build_dl_mri(
            models.DLMRIConfig(image_size=16, conv1_t_stride=2, checkpoint=str(tmp_path / "resnet_18.pth"))
        )
    assert torch.equal(dst.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
    assert not torch.equal(dst.fc.weight, src.fc.weight)  # the classifier starts afresh
