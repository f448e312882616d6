"""Predictor: model + preprocessing + device handling + post-processing, no Ray (house rule 8).

``predict(frames uint8[B,H,W,3]) -> list[FrameParsing]`` at the frames' own resolution.
Preprocessing runs on the model's device with kornia: resize keeping the aspect ratio so the
short side is ``input_size[0]`` and the long side at most ``input_size[1]``, ImageNet
normalisation, zero padding to a multiple of 32. On CUDA, frames go through pinned host buffers,
host-to-device copies run on a dedicated stream (``predict_many`` overlaps the copy of batch
i+1 with the compute of batch i), optional fp16/bf16 autocast, and device-to-host copies are
non-blocking. On CPU the same code runs without streams, channels_last, under inference_mode.
``preprocess="official"`` / ``protocol="official"`` select the authors' preprocessing
(``streamparse.preprocess_official``) and post-processing (``models.postprocess_official``), the
preset of converted authors' checkpoints (``streamparse convert-official``).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from streamparse.categories import get_label_space
from streamparse.structures import FrameParsing

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU -> ValueError."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available (use --device cpu or auto)")
    return torch.device(device)


def target_size(h: int, w: int, short: int, long: int) -> tuple[int, int, float]:
    """Resized (h, w) keeping aspect: short side -> ``short`` unless the long side exceeds ``long``."""
    scale = min(short / min(h, w), long / max(h, w))
    return max(1, int(round(h * scale))), max(1, int(round(w * scale))), scale


class Predictor:
    """Runs a UniParser on batches of RGB frames.

    Args:
        model: a ``UniParser`` (any registered variant).
        model_name, class_names, palette: metadata (stored with outputs).
        input_size: (short side, max long side) of the network input.
        device: torch device ('auto' resolved by ``resolve_device``).
        mask_thresh, merge_cos, cate_score_thresh: post-processing (see ``models.postprocess``).
        flip_perm: (num_classes,) left/right class permutation; given, every batch also runs
            mirrored and the passes are averaged (``UniParser.forward_tta``, ``model.test_flip``).
        test_scales: factors of ``input_size`` to run at and average (``model.test_scales``);
            1.0, the reference grid, must be among them.
        amp: 'none' | 'fp16' | 'bf16' autocast (CUDA only; ignored on CPU).
        cuda_streams: use a dedicated copy stream on CUDA.
        torch_threads: CPU threads (0 = leave torch's default).
        preprocess: 'default' (kornia, above) or 'official' (the authors': cv2 on the host).
        protocol: 'default' (``models.postprocess``) or 'official' (the authors' per-person maps;
            label maps: the highest centre score wins where people overlap); its thresholds come
            from ``official_params`` (default: ``OfficialParams()`` with ``mask_thresh`` and
            ``cate_score_thresh``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        model_name: str,
        class_names: list[str],
        palette: np.ndarray | None = None,
        input_size: tuple[int, int] = (512, 512),
        device: str | torch.device | None = "auto",
        mask_thresh: float = 0.5,
        merge_cos: float = 0.95,
        cate_score_thresh: float = 0.15,
        flip_perm: np.ndarray | None = None,
        test_scales: tuple[float, ...] = (1.0,),
        amp: str = "none",
        cuda_streams: bool = True,
        torch_threads: int = 0,
        checkpoint_sha256: str | None = None,
        checkpoint_path: str | None = None,
        preprocess: str = "default",
        protocol: str = "default",
        official_params=None,
    ):
        if preprocess not in ("default", "official"):
            raise ValueError(f"preprocess must be default or official, got {preprocess!r}")
        if protocol not in ("default", "official"):
            raise ValueError(f"protocol must be default or official, got {protocol!r}")
        self.device = resolve_device(device)
        if torch_threads and self.device.type == "cpu":
            torch.set_num_threads(int(torch_threads))
        self.model = model.eval().to(self.device)
        if self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model_name = model_name
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.palette = np.asarray(palette if palette is not None else np.zeros((self.num_classes, 3)), dtype=np.uint8)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mask_thresh = mask_thresh
        self.merge_cos = merge_cos
        self.cate_score_thresh = float(cate_score_thresh)
        self.flip_perm = None
        if flip_perm is not None:
            perm = torch.as_tensor(np.asarray(flip_perm), dtype=torch.long)
            if perm.shape != (self.num_classes,) or sorted(perm.tolist()) != list(range(self.num_classes)):
                raise ValueError(f"flip_perm must be a permutation of 0..{self.num_classes - 1}, got {perm.tolist()}")
            self.flip_perm = perm.to(self.device)
        scales = tuple(float(f) for f in test_scales)
        if 1.0 not in scales or any(not (0.1 <= f <= 4.0) for f in scales) or len(set(scales)) != len(scales):
            raise ValueError(f"model.test_scales must be distinct factors in [0.1, 4] that include 1.0, got {list(scales)}")
        self.test_scales = (1.0,) + tuple(f for f in scales if f != 1.0)  # the reference first
        if amp not in ("none", "fp16", "bf16"):
            raise ValueError(f"amp must be none, fp16 or bf16, got {amp!r}")
        self.amp = amp
        self.checkpoint_sha256 = checkpoint_sha256
        self.checkpoint_path = checkpoint_path
        self.use_streams = bool(cuda_streams) and self.device.type == "cuda"
        self._copy_stream = torch.cuda.Stream(device=self.device) if self.use_streams else None
        self._mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1)
        self.preprocess_mode = preprocess
        self.protocol = protocol
        self.official_params = None
        if protocol == "official":
            from streamparse.models.postprocess_official import OfficialParams

            self.official_params = official_params or OfficialParams(mask_thr=mask_thresh, cate_score_thr=self.cate_score_thresh)
            if self.flip_perm is not None or len(self.test_scales) > 1:
                raise ValueError("protocol 'official' runs without test-time augmentation (model.test_flip, model.test_scales)")
            if getattr(self.model, "stride", None) != self.official_params.upsample:
                raise ValueError(f"protocol 'official' needs a stride-{self.official_params.upsample} model, "
                                 f"{model_name} has stride {getattr(self.model, 'stride', None)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg, checkpoint: str | None = None, device: str | None = None) -> "Predictor":
        """Build from a ``streamparse.config.Config``. ``checkpoint``: a path, 'default' (the
        shipped weights), 'none' (random init) or None (shipped weights if they fit
        ``cfg.model``, else random init with a warning)."""
        from streamparse import checkpoint as ck
        from streamparse.models import build_model

        mc, pc = cfg.model, cfg.pipeline
        dev = device or pc.device
        path = ck.resolve_checkpoint(checkpoint, mc.name, mc.num_classes)
        if path:
            model, meta = ck.build_from_checkpoint(path, expect_model=mc.name, expect_num_classes=mc.num_classes)
            class_names = meta["class_names"]
            sha = ck.sha256_file(path)
        else:
            with torch.random.fork_rng(devices=[]):  # deterministic random init: every worker builds the same model
                torch.manual_seed(0)
                model = build_model(mc.name, num_classes=mc.num_classes)
            sha = None
            class_names = None
        space = None
        try:
            space = get_label_space(mc.label_space)
        except ValueError:
            pass
        if space is None or space.num_classes != mc.num_classes:
            try:
                space = get_label_space(mc.num_classes)
            except ValueError:
                space = None
        if class_names is None:
            class_names = list(space.names) if space else ["background"] + [f"part{i}" for i in range(1, mc.num_classes)]
        palette = space.palette_array() if space and space.num_classes == len(class_names) else None
        flip_perm = None
        if mc.test_flip:
            if space is None or space.num_classes != len(class_names):
                raise ValueError(
                    f"model.test_flip needs the left/right pairs of a known label space; {mc.label_space!r} with "
                    f"{len(class_names)} classes has none"
                )
            flip_perm = space.flip_lut()
        official_params = None
        if mc.protocol == "official":
            from streamparse.models.postprocess_official import OfficialParams

            official_params = OfficialParams(ctr_score=mc.center_thresh, mask_thr=mc.mask_thresh,
                                             cate_score_thr=mc.cate_score_thresh)
        model.center_thresh = mc.center_thresh
        model.center_pool = mc.center_pool
        model.max_instances = mc.max_instances
        return cls(
            model,
            model_name=mc.name,
            class_names=class_names,
            palette=palette,
            input_size=tuple(mc.input_size),
            device=dev,
            mask_thresh=mc.mask_thresh,
            merge_cos=mc.merge_cos,
            cate_score_thresh=mc.cate_score_thresh,
            flip_perm=flip_perm,
            test_scales=mc.test_scales,
            amp=pc.amp,
            cuda_streams=pc.cuda_streams,
            torch_threads=pc.torch_threads,
            checkpoint_sha256=sha,
            checkpoint_path=path,
            preprocess=mc.preprocess,
            protocol=mc.protocol,
            official_params=official_params,
        )

    @classmethod
    def from_checkpoint(cls, path: str, device: str | None = "auto", **model_overrides) -> "Predictor":
        """Build from a checkpoint alone (its stored config gives the model section)."""
        from streamparse import checkpoint as ck
        from streamparse.config import Config, from_dict, to_dict

        meta = ck.load_checkpoint(path)
        data = to_dict(Config())
        stored = meta.get("config") or {}
        if isinstance(stored.get("model"), dict):
            data["model"].update({k: v for k, v in stored["model"].items() if k in data["model"]})
        data["model"]["name"] = meta["model_name"]
        data["model"]["num_classes"] = len(meta["class_names"])
        data["model"].update(model_overrides)
        return cls.from_config(from_dict(data), checkpoint=path, device=device)

    # ------------------------------------------------------------------ preprocessing
    def _to_device(self, frames: np.ndarray) -> torch.Tensor:
        with warnings.catch_warnings():  # read-only arrays (Ray zero-copy) are only read here, never written
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.from_numpy(np.ascontiguousarray(frames))
        if self.device.type == "cuda":
            t = t.pin_memory()
            if self._copy_stream is not None:
                with torch.cuda.stream(self._copy_stream):
                    t = t.to(self.device, non_blocking=True)
                    ev = torch.cuda.Event()
                    ev.record(self._copy_stream)
                self._pending_event = ev
                return t
            return t.to(self.device, non_blocking=True)
        return t

    def preprocess(
        self, frames_dev: torch.Tensor, input_size: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """uint8 (B,H,W,3) on the device -> normalised, padded float (B,3,Hp,Wp), (h, w) resized
        to ``input_size`` (short side, max long side; default ``self.input_size``)."""
        if self.preprocess_mode == "official":
            from streamparse.preprocess_official import official_preprocess

            x, size = official_preprocess(frames_dev.cpu().numpy(), input_size or self.input_size)
            x = torch.from_numpy(x).to(self.device)
            return (x.contiguous(memory_format=torch.channels_last) if self.device.type == "cpu" else x), size
        import kornia

        b, h, w, _ = frames_dev.shape
        nh, nw, _ = target_size(h, w, *(input_size or self.input_size))
        x = frames_dev.permute(0, 3, 1, 2).float().div_(255.0)
        if (nh, nw) != (h, w):
            x = kornia.geometry.transform.resize(x, (nh, nw), interpolation="bilinear", antialias=(nh < h))
        x = kornia.enhance.normalize(x, self._mean.view(3), self._std.view(3))
        ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
        x = F.pad(x, (0, pw - nw, 0, ph - nh))
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, (nh, nw)

    def _forward(self, frames_dev: torch.Tensor, x: torch.Tensor, size: tuple[int, int]):
        """The network on one preprocessed batch ``x`` of valid size ``size``, with the configured
        test-time augmentation (extra scales re-preprocess ``frames_dev``)."""
        if self.flip_perm is None and len(self.test_scales) == 1:
            return self.model(x, compute_parsing=False)
        xs, ratios = [x], [(1.0, 1.0)]
        (nh, nw), (ph, pw) = size, x.shape[-2:]
        for f in self.test_scales[1:]:
            xi, (sh, sw) = self.preprocess(frames_dev, (round(self.input_size[0] * f), round(self.input_size[1] * f)))
            xs.append(xi)
            ratios.append(((sh / xi.shape[-2]) / (nh / ph), (sw / xi.shape[-1]) / (nw / pw)))
        return self.model.forward_tta(xs, ratios=ratios, flip_perm=self.flip_perm, compute_parsing=False)

    def _autocast(self):
        if self.device.type == "cuda" and self.amp != "none":
            return torch.autocast("cuda", dtype=torch.float16 if self.amp == "fp16" else torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def _run_official(self, frames_dev: torch.Tensor, semantic: bool = False) -> list:
        """``protocol="official"``: one ``OfficialParsing`` (overlapping per-person maps at the
        frames' resolution) per frame."""
        from streamparse.models.postprocess_official import parse_official

        b, H, W, _ = frames_dev.shape
        x, (nh, nw) = self.preprocess(frames_dev)
        none = [torch.zeros(0, dtype=torch.long, device=self.device)] * b  # dense heads only
        with self._autocast():
            out = self.model(x, none, compute_parsing=False, keep_grid_pad=True)
        return [parse_official(center_logits=out.center_logits[i, 0].float(), ins_feats=out.ins_feats[i],
                               cate_maps=out.cate_maps[i, 1:], grid=self.model.grid, valid_hw=(nh, nw), out_hw=(H, W),
                               params=self.official_params, semantic=semantic) for i in range(b)]

    def official_frame_parsing(self, op) -> FrameParsing:
        """An ``OfficialParsing`` as exclusive label maps (where people overlap, the highest centre
        score wins; people left without pixels are dropped)."""
        from streamparse.models.postprocess_official import overlap_label_maps

        part, instance, kept = overlap_label_maps(op.labels, op.scores)
        part, instance = part.cpu().numpy(), instance.cpu().numpy().astype(np.uint16)
        k = int(kept.numel())
        pa = np.bincount(instance.ravel().astype(np.int64) * self.num_classes + part.ravel(),
                         minlength=(k + 1) * self.num_classes).reshape(k + 1, self.num_classes)[1:]
        return FrameParsing(part=part, instance=instance, scores=op.scores[kept].cpu().numpy(), part_areas=pa)

    def predict_official(self, frames: np.ndarray, semantic: bool = False) -> list:
        """``protocol="official"`` only: frames uint8[B,H,W,3] -> B ``OfficialParsing`` (the
        per-person maps the evaluator scores, and with ``semantic`` the authors' semantic map;
        ``predict`` gives the exclusive label maps)."""
        if self.protocol != "official":
            raise ValueError("predict_official needs protocol 'official'")
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8[B,H,W,3], got {frames.dtype}{list(frames.shape)}")
        dev = self._to_device(frames)
        if self.use_streams:
            torch.cuda.current_stream(self.device).wait_event(self._pending_event)
            dev.record_stream(torch.cuda.current_stream(self.device))  # allocated on the copy stream
        return self._run_official(dev, semantic)

    @torch.inference_mode()
    def _run(self, frames_dev: torch.Tensor) -> list[FrameParsing]:
        from streamparse.models.postprocess import parse_image

        if self.protocol == "official":
            return [self.official_frame_parsing(op) for op in self._run_official(frames_dev)]

        b, H, W, _ = frames_dev.shape
        x, (nh, nw) = self.preprocess(frames_dev)
        with self._autocast():
            out = self._forward(frames_dev, x, (nh, nw))
        heat = out.heatmap.float()
        results = []
        for i in range(b):
            parsed = parse_image(
                heat=heat[i, 0],
                cells=out.centers[i],
                ins_kernels=out.ins_kernels[i].float(),
                ins_maps=out.ins_maps[i],
                cate_maps=out.cate_maps[i],
                parsing=None if out.parsing is None else out.parsing[i],
                stride=self.model.stride,
                out_size=(nh, nw),
                mask_thresh=self.mask_thresh,
                merge_cos=self.merge_cos,
                cate_score_thresh=self.cate_score_thresh,
            )
            stacked = torch.stack([parsed.part, parsed.instance]).float()[None]
            if (nh, nw) != (H, W):
                stacked = F.interpolate(stacked, size=(H, W), mode="nearest")
            results.append((stacked[0].to(torch.int32), parsed.scores.float()))
        out_list = []
        if self.device.type == "cuda":  # start all device-to-host copies, then wait once
            host = [(m.to("cpu", non_blocking=True), s.to("cpu", non_blocking=True)) for m, s in results]
            torch.cuda.current_stream(self.device).synchronize()
        else:
            host = results
        for maps, scores in host:
            part = maps[0].numpy().astype(np.uint8)
            instance = maps[1].numpy().astype(np.uint16)
            k = int(scores.shape[0])
            pa = np.bincount(
                instance.ravel().astype(np.int64) * self.num_classes + part.ravel(), minlength=(k + 1) * self.num_classes
            ).reshape(k + 1, self.num_classes)[1:]
            out_list.append(FrameParsing(part=part, instance=instance, scores=scores.numpy(), part_areas=pa))
        return out_list

    def predict(self, frames: np.ndarray | list[np.ndarray]) -> list[FrameParsing]:
        """frames: uint8[B,H,W,3] RGB (or a list of HxWx3 images of any sizes) -> B parsings."""
        if isinstance(frames, list):
            if not frames:
                return []
            shapes = {f.shape for f in frames}
            if len(shapes) > 1:
                return [r for f in frames for r in self.predict(np.asarray(f)[None])]
            frames = np.stack(frames)
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8[B,H,W,3], got {frames.dtype}{list(frames.shape)}")
        if frames.shape[0] == 0:
            return []
        dev = self._to_device(frames)
        if self.use_streams:
            torch.cuda.current_stream(self.device).wait_event(self._pending_event)
            dev.record_stream(torch.cuda.current_stream(self.device))  # allocated on the copy stream
        return self._run(dev)

    def predict_many(self, batches: Iterable[np.ndarray]) -> Iterator[list[FrameParsing]]:
        """Like ``predict`` over many batches; on CUDA the host-to-device copy of the next batch
        (copy stream) overlaps the compute of the current one."""
        it = iter(batches)
        if not self.use_streams:
            for frames in it:
                yield self.predict(frames)
            return
        nxt = next(it, None)
        staged = (self._to_device(nxt), self._pending_event) if nxt is not None else None
        while staged is not None:
            cur, ev = staged
            nxt = next(it, None)
            staged = (self._to_device(nxt), self._pending_event) if nxt is not None else None
            torch.cuda.current_stream(self.device).wait_event(ev)
            cur.record_stream(torch.cuda.current_stream(self.device))
            yield self._run(cur)

    def __call__(self, batch: dict) -> dict:
        """Ray-data style: ``FrameBatch.to_dict()`` in; stacked label maps + CSR instance table out."""
        parsings = self.predict(np.asarray(batch["frames"]))
        return parsings_to_dict(parsings, batch)

    def info(self) -> dict:
        return {
            "model_name": self.model_name,
            "class_names": self.class_names,
            "checkpoint_sha256": self.checkpoint_sha256,
            "device": str(self.device),
            "input_size": list(self.input_size),
            "test_flip": self.flip_perm is not None,
            "test_scales": list(self.test_scales),
            "preprocess": self.preprocess_mode,
            "protocol": self.protocol,
        }


def parsings_to_dict(parsings: list[FrameParsing], batch: dict | None = None) -> dict:
    """Stack B parsings: part uint8[B,H,W], instance uint16[B,H,W], inst_offset int64[B+1],
    inst_score float32[N], inst_bbox int32[N,4], inst_area int64[N]; pass batch metadata through."""
    counts = [p.num_instances for p in parsings]
    out = {
        "part": np.stack([p.part for p in parsings]) if parsings else np.zeros((0, 0, 0), np.uint8),
        "instance": np.stack([p.instance for p in parsings]) if parsings else np.zeros((0, 0, 0), np.uint16),
        "inst_offset": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "inst_score": np.concatenate([p.scores for p in parsings]).astype(np.float32) if parsings else np.zeros(0, np.float32),
        "inst_bbox": np.concatenate([p.bboxes for p in parsings]).astype(np.int32).reshape(-1, 4) if parsings else np.zeros((0, 4), np.int32),
        "inst_area": np.concatenate([p.areas for p in parsings]).astype(np.int64) if parsings else np.zeros(0, np.int64),
    }
    if batch is not None:
        for key in ("frame_index", "pts", "time", "wallclock", "segment", "time_base", "source_id"):
            if key in batch:
                out[key] = batch[key]
    return out


def default_threads() -> int:
    return max(1, (os.cpu_count() or 1))
