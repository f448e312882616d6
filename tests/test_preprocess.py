"""One preprocessing rule: the tensor a trained model sees for an image is the one inference feeds it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamparse.categories import CIHP
from streamparse.engine.preprocess import STD, Preprocessor, target_size
from streamparse.training.data import Collate, TrainAugment


@pytest.mark.parametrize("hw,input_size", [((240, 320), (256, 448)), ((480, 640), (256, 448)), ((300, 900), (512, 896)),
                                           ((96, 128), (64, 96))])
def test_training_and_inference_see_the_same_tensor(hw, input_size):
    rng = np.random.default_rng(0)
    h, w = hw
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[h // 4 : h // 2, w // 4 : w // 2] = (200, 30, 30)  # some structure, edges included
    # inference: the whole batch path on the CPU device
    x_inf, (nh, nw) = Preprocessor(input_size=input_size, device=torch.device("cpu"))(torch.from_numpy(image[None]))
    # training: the augmentation at the same short side (no flip), then the collate step
    aug = TrainAugment(short_sides=(input_size[0],), max_long_side=input_size[1], flip_prob=0.0, label_space=CIHP)
    item = aug({"image": image, "persons": [np.ones((h, w), np.uint8)]}, np.random.default_rng(0))
    batch = Collate(num_classes=20, grid=16, stride=8)([item])
    assert (nh, nw) == item["image"].shape[:2] == target_size(h, w, *input_size)[:2]
    assert tuple(batch.images.shape) == tuple(x_inf.shape)
    diff = (batch.images - x_inf).abs()
    # the training image is stored as uint8 once resized: at most half a grey level (1/255 after rounding),
    # in normalised units 0.5 / 255 / std
    assert float(diff.max()) <= 0.5 / 255 / min(STD) + 1e-5, float(diff.max())
    assert float(diff.mean()) < 0.25 / 255 / min(STD)


def test_size_rule_caps_the_long_side():
    assert target_size(480, 640, 256, 448)[:2] == (256, 341)
    assert target_size(300, 900, 256, 448)[:2] == (149, 448)  # the long side reaches the cap first
    assert target_size(256, 256, 256, 448)[:2] == (256, 256)


def test_to_frame_is_nearest_and_exact():
    maps = torch.tensor([[[1, 2], [3, 4]]])
    out = Preprocessor.to_frame(maps, (4, 4))
    assert out.dtype == maps.dtype and out[0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


@pytest.mark.parametrize("hw,size", [((256, 455), (432, 768)), ((256, 341), (480, 640)), ((200, 333), (1080, 1920)),
                                     ((257, 449), (1023, 1777)), ((512, 512), (300, 301)), ((64, 64), (64, 64)),
                                     ((7, 5), (3, 11))])
def test_labels_to_frame_gathers_the_pixels_to_frame_resamples(hw, size):
    """The CPU pipeline's host gather (``labels_to_frame``) = ``to_frame`` then the stored dtypes, bit for bit,
    enlarging, shrinking, odd ratios and the same size; instance ids past 255 keep their high byte."""
    g = torch.Generator().manual_seed(hw[0] * size[1])
    part = torch.randint(0, 59, hw, generator=g)
    instance = torch.randint(0, 700, hw, generator=g)
    ref = Preprocessor.to_frame(torch.stack([part, instance]), size).to(torch.int32)
    out_p, out_i = np.empty(size, np.uint8), np.empty(size, np.uint16)
    Preprocessor.labels_to_frame(part, instance, size, out_p, out_i)
    np.testing.assert_array_equal(out_p, ref[0].numpy().astype(np.uint8))
    np.testing.assert_array_equal(out_i, ref[1].numpy().astype(np.uint16))
    cand = np.empty((2, *size), np.uint8)  # the candidates' maps: both uint8, as the protocol stored them before
    Preprocessor.labels_to_frame(part, instance, size, cand[0], cand[1])
    np.testing.assert_array_equal(cand, Preprocessor.to_frame(torch.stack([part, instance]), size).to(torch.uint8).numpy())


@pytest.mark.parametrize("hw", [(480, 640), (481, 643), (720, 1280), (300, 2000), (2, 900), (600, 3), (97, 61)])
@pytest.mark.parametrize("layout", ["frames", "contiguous"])
def test_antialias_resize_is_kornias_bits(hw, layout):
    """The CPU shrink (``antialias_resize``: reflected borders from views, kornia's taps in kornia's order) gives
    exactly kornia's bits, for channels_last frames (as decoded) and contiguous tensors, odd sizes, singletons."""
    import kornia

    from streamparse.engine.preprocess import antialias_resize

    h, w = hw
    frames = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, h, w, 3), dtype=np.uint8))
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)
    if layout == "contiguous":
        x = x.contiguous()
    for size in (target_size(h, w, 256, 448)[:2], (max(1, h // 2), max(1, w // 3)), (max(1, h - 1), w)):
        ref = kornia.geometry.transform.resize(x, size, interpolation="bilinear", antialias=True)
        assert torch.equal(antialias_resize(x, size), ref), (hw, size)


@pytest.mark.parametrize("hw", [(480, 640), (432, 768), (540, 960), (97, 61), (3, 900), (257, 300), (200, 300), (720, 1280),
                                (1080, 1920)])
def test_preprocessor_output_is_the_kornia_rule(hw):
    """The inference preprocessing (CPU: the strip-wise shrink of uint8 frames, normalised into the padded
    tensor) == the rule written with kornia, bit for bit: shrinks by short kernels (strips, borders, a frame
    barely taller than a strip), by long ones (kornia's own path), no shrink (257x300 -> 256) and a bigger
    frame (200x300 -> 256x384)."""
    import kornia
    import torch.nn.functional as F

    from streamparse.engine.preprocess import MEAN

    frames = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (3, *hw, 3), dtype=np.uint8))
    pre = Preprocessor(input_size=(256, 448), device=torch.device("cpu"))
    for _ in range(2):  # (the second batch reuses the shrink's buffer)
        x, (nh, nw) = pre(frames)
        ref = frames.permute(0, 3, 1, 2).float().div(255.0)
        if (nh, nw) != hw:
            ref = kornia.geometry.transform.resize(ref, (nh, nw), interpolation="bilinear", antialias=nh < hw[0])
        ref = kornia.enhance.normalize(ref, torch.tensor(MEAN), torch.tensor(STD))
        ref = F.pad(ref, (0, x.shape[-1] - nw, 0, x.shape[-2] - nh))
        assert x.shape == ref.shape and x.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(x, ref), hw
