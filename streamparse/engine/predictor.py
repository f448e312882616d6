"""Predictor: a model + the preprocessing + the device + the post-processing, no Ray (house rule 8).

``__call__(FrameBatch dict) -> ParsingBatch dict`` for the pipeline; ``predict(frames) ->
list[FrameParsing]`` for single images. The data path, in order: frames (uint8, host) -> device
(pinned buffers and a copy stream on CUDA) -> ``Preprocessor`` (resize, normalise, pad: kornia on
the device) -> ``UniParser`` dense heads -> ``pick_centres`` -> ``UniParser.instances`` (or
``models.tta.forward_tta`` with test-time augmentation) -> ``parse_image`` per frame -> label maps
back at the frame's size -> host (non-blocking copies on CUDA) -> ``ParsingBatch``.
On CPU the same code runs without streams, channels_last, under inference_mode.
``preprocess="official"`` / ``protocol="official"`` select the authors' preprocessing
(``streamparse.official.preprocess``) and post-processing (``models.postprocess_official``), the
preset of converted authors' checkpoints (``streamparse convert-official``).

Built from config in ``streamparse.plan`` (the only place config becomes objects).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from streamparse.models.candidates import candidate_outputs, parse_candidates
from streamparse.models.postprocess import PostprocessParams, parse_image, pick_centres
from streamparse.engine.preprocess import Preprocessor, frames_to_tensor
from streamparse import candidates
from streamparse.labelstats import instance_stats
from streamparse.runtime import RuntimeSpec
from streamparse.runtime.engines import EngineModel, TorchEngine
from streamparse.structures import FrameBatch, FrameParsing, ParsingBatch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU -> ValueError."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available (use --device cpu or auto)")
    return torch.device(device)


@dataclass
class _Maps:
    """A batch's label maps at the frames' size (host numpy) and each frame's people's scores."""

    part: np.ndarray  # uint8 (B,H,W)
    instance: np.ndarray  # uint16 (B,H,W)
    scores: list[np.ndarray]  # B x float32 (K_b,)
    kernels: list[np.ndarray]  # B x float16 (K_b, D): each kept person's unit instance kernel
    cand: tuple | None = None  # low-score candidates: (part (B,H,W), instance (B,H,W), B scores, B kernels)


class Predictor:
    """Runs a UniParser on batches of RGB frames.

    Args:
        model: a ``UniParser`` (any registered variant).
        model_name, class_names, palette: metadata (stored with outputs).
        input_size: (short side, max long side) of the network input.
        device: torch device ('auto' resolved by ``resolve_device``).
        postprocess: thresholds of centre picking and decoding (``PostprocessParams``).
        flip_perm: (num_classes,) left/right class permutation, or None; given, every batch also runs
            mirrored and the passes are averaged (``models.tta``).
        test_scales: factors of ``input_size`` to run at and average; 1.0, the reference grid, first.
        amp: 'none' | 'fp16' | 'bf16' autocast (CUDA only; ignored on CPU).
        cuda_streams: use a dedicated copy stream on CUDA.
        preprocess: 'default' (kornia, ``streamparse.engine.preprocess``) or 'official' (the authors': cv2 on the host).
        protocol: 'default' (``models.postprocess``) or 'official' (the authors' overlapping per-person
            maps; label maps: the highest centre score wins where people overlap), with the thresholds
            ``official_params`` (``OfficialParams``).
        runtime: the ``streamparse.runtime.RuntimeSpec`` fields (runtime, precision, cache_dir, calibration,
            calibration_frames): what the dense heads run on (``self.engine``; torch = the model itself).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        model_name: str,
        class_names: list[str],
        palette: np.ndarray | None,
        input_size: tuple[int, int],
        device: str | torch.device | None,
        postprocess: PostprocessParams,
        flip_perm: np.ndarray | None,
        test_scales: tuple[float, ...],
        amp: str,
        cuda_streams: bool,
        preprocess: str,
        protocol: str,
        runtime: dict,
        official_params=None,
        checkpoint_sha256: str | None = None,
        checkpoint_path: str | None = None,
    ):
        if protocol not in ("default", "official"):
            raise ValueError(f"protocol must be default or official, got {protocol!r}")
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        if self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model_name = model_name
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.embedding_dim = int(self.model.cate_kernels.weight.shape[1])  # D of the instance kernels
        self.palette = np.asarray(palette if palette is not None else np.zeros((self.num_classes, 3)), dtype=np.uint8)
        self.preprocess = Preprocessor(input_size=input_size, device=self.device, mode=preprocess)
        self.input_size = self.preprocess.input_size
        self.params = postprocess
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
        self._pending_event = None
        # host seconds spent per stage (on CUDA without synchronising: the device may still be running)
        self.stage_s: dict[str, float] = defaultdict(float)
        self.protocol = protocol
        self.official_params = None
        if protocol == "official":
            from streamparse.models.postprocess_official import OfficialParams

            self.official_params = official_params or OfficialParams(mask_thr=postprocess.mask_thresh,
                                                                     cate_score_thr=postprocess.cate_score_thresh)
            if self.flip_perm is not None or len(self.test_scales) > 1:
                raise ValueError("protocol 'official' runs without test-time augmentation (model.test_flip, model.test_scales)")
            if getattr(self.model, "stride", None) != self.official_params.upsample:
                raise ValueError(f"protocol 'official' needs a stride-{self.official_params.upsample} model, "
                                 f"{model_name} has stride {getattr(self.model, 'stride', None)}")
        # the dense heads' engine (streamparse.runtime): torch, or an exported runtime chosen last, when
        # everything it needs to compare label maps with torch's is set up
        self.runtime_spec = RuntimeSpec(**runtime)
        self.engine = TorchEngine(self.model)
        if self.runtime_spec.runtime != "torch":
            from streamparse.runtime.select import make_engine

            s = self.runtime_spec
            self.engine = make_engine(self, runtime=s.runtime, precision=s.precision, cache_dir=s.cache_dir or None,
                                      calibration=s.calibration, calibration_frames=s.calibration_frames)
            self.stage_s.clear()  # the parity runs of the choice are not the run's time

    # ------------------------------------------------------------------ host -> device
    def _to_device(self, frames: np.ndarray) -> torch.Tensor:
        t = frames_to_tensor(frames)
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

    def _autocast(self):
        if self.device.type == "cuda" and self.amp != "none":
            return torch.autocast("cuda", dtype=torch.float16 if self.amp == "fp16" else torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ model
    def _forward(self, frames_dev: torch.Tensor, x: torch.Tensor, size: tuple[int, int]):
        """The network on one preprocessed batch ``x`` of valid size ``size``: dense heads, centres,
        per-person outputs; with test-time augmentation (extra scales re-preprocess ``frames_dev``)."""
        if self.flip_perm is None and len(self.test_scales) == 1:
            out = self.engine(x)
            return self.model.instances(out, pick_centres(out.heatmap, self.params), compute_parsing=False)
        from streamparse.models.tta import forward_tta

        xs, ratios = [x], [(1.0, 1.0)]
        (nh, nw), (ph, pw) = size, x.shape[-2:]
        for f in self.test_scales[1:]:
            xi, (sh, sw) = self.preprocess(frames_dev, (round(self.input_size[0] * f), round(self.input_size[1] * f)))
            xs.append(xi)
            ratios.append(((sh / xi.shape[-2]) / (nh / ph), (sw / xi.shape[-1]) / (nw / pw)))
        return forward_tta(EngineModel(self.model, self.engine), xs, self.params, ratios=ratios, flip_perm=self.flip_perm, compute_parsing=False)

    @torch.inference_mode()
    def _run_official(self, frames_dev: torch.Tensor, semantic: bool = False) -> tuple[list, object]:
        """``protocol="official"``: one ``OfficialParsing`` (overlapping per-person maps at the frames'
        resolution) per frame, and the dense heads (for the people's kernels)."""
        from streamparse.models.postprocess_official import parse_official

        b, H, W, _ = frames_dev.shape
        x, (nh, nw) = self.preprocess(frames_dev)
        with self._autocast():
            out = self.engine(x, keep_grid_pad=True)  # dense heads only
        return [parse_official(center_logits=out.center_logits[i, 0].float(), ins_feats=out.ins_feats[i],
                               cate_maps=out.cate_maps[i, 1:], grid=self.model.grid, valid_hw=(nh, nw), out_hw=(H, W),
                               params=self.official_params, semantic=semantic) for i in range(b)], out

    def _maps_official(self, frames_dev: torch.Tensor) -> _Maps:
        """The official protocol's parsings as exclusive label maps (where people overlap, the highest
        centre score wins; people left without pixels are dropped), with each kept person's kernel."""
        from streamparse.models.postprocess_official import overlap_label_maps

        ops, out = self._run_official(frames_dev)
        parts, insts, scores, kernels = [], [], [], []
        for i, op in enumerate(ops):
            part, instance, kept = overlap_label_maps(op.labels, op.scores)
            parts.append(part.cpu().numpy().astype(np.uint8))
            insts.append(instance.cpu().numpy().astype(np.uint16))
            scores.append(op.scores[kept].float().cpu().numpy())
            kfeats = out.kernel_feats if out.kernel_feats is not None else out.ins_feats
            kernels.append(self.model.sample_kernels(kfeats[i], op.cells[kept]).to(torch.float16).cpu().numpy())
        return _Maps(part=np.stack(parts), instance=np.stack(insts), scores=scores, kernels=kernels)

    def official_frame_parsing(self, op) -> FrameParsing:
        """An ``OfficialParsing`` as exclusive label maps (where people overlap, the highest centre
        score wins; people left without pixels are dropped)."""
        from streamparse.models.postprocess_official import overlap_label_maps

        part, instance, kept = overlap_label_maps(op.labels, op.scores)
        m = _Maps(part=part.cpu().numpy()[None].astype(np.uint8), instance=instance.cpu().numpy()[None].astype(np.uint16),
                  scores=[op.scores[kept].float().cpu().numpy()], kernels=[None])
        return self._parsings(m)[0]

    def predict_official(self, frames: np.ndarray, semantic: bool = False) -> list:
        """``protocol="official"`` only: frames uint8[B,H,W,3] -> B ``OfficialParsing`` (the per-person
        maps the evaluator scores, and with ``semantic`` the authors' semantic map; ``predict`` gives
        the exclusive label maps)."""
        if self.protocol != "official":
            raise ValueError("predict_official needs protocol 'official'")
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8[B,H,W,3], got {frames.dtype}{list(frames.shape)}")
        dev = self._to_device(frames)
        if self.use_streams:
            torch.cuda.current_stream(self.device).wait_event(self._pending_event)
            dev.record_stream(torch.cuda.current_stream(self.device))  # allocated on the copy stream
        return self._run_official(dev, semantic)[0]

    @torch.inference_mode()
    def _run(self, frames_dev: torch.Tensor) -> _Maps:
        if self.protocol == "official":
            return self._maps_official(frames_dev)
        b, H, W, _ = frames_dev.shape
        t0 = time.perf_counter()
        x, (nh, nw) = self.preprocess(frames_dev)
        t1 = time.perf_counter()
        with self._autocast():
            out = self._forward(frames_dev, x, (nh, nw))
        t2 = time.perf_counter()
        self.stage_s["preprocess"] += t1 - t0
        self.stage_s["network"] += t2 - t1
        heat = out.heatmap.float()
        p = self.params
        tc = time.perf_counter()
        cout = None
        if self.flip_perm is None and len(self.test_scales) == 1:  # (no candidates with test-time augmentation)
            cout = candidate_outputs(self.model, out, heat, p)
        tc = time.perf_counter() - tc  # (the candidates' share of the post-processing: stage_s["candidates"])
        maps, scores, kernels, cand = [], [], [], [None] * b
        for i in range(b):
            parsed = parse_image(
                heat=heat[i, 0], cells=out.centers[i], ins_kernels=out.ins_kernels[i].float(), ins_maps=out.ins_maps[i],
                cate_maps=out.cate_maps[i], parsing=None if out.parsing is None else out.parsing[i],
                stride=self.model.stride, out_size=(nh, nw), mask_thresh=p.mask_thresh, merge_cos=p.merge_cos,
                cate_score_thresh=p.cate_score_thresh,
            )
            if cout is not None and cout.centers[i].numel():
                t3 = time.perf_counter()
                c = parse_candidates(heat=heat[i, 0], cells=cout.centers[i], ins_kernels=cout.ins_kernels[i].float(),
                                     ins_maps=cout.ins_maps[i], cate_maps=cout.cate_maps[i],
                                     parsing=None if cout.parsing is None else cout.parsing[i], det_instance=parsed.instance,
                                     det_kernels=parsed.kernels, stride=self.model.stride, out_size=(nh, nw),
                                     mask_thresh=p.mask_thresh, merge_cos=p.merge_cos, cate_score_thresh=p.cate_score_thresh)
                if c.scores.numel():  # only frames with candidates pay for their maps
                    cand[i] = (self.preprocess.to_frame(torch.stack([c.part, c.instance]), (H, W)).to(torch.uint8),
                               c.scores.float(), c.kernels.to(torch.float16))
                tc += time.perf_counter() - t3
            maps.append(self.preprocess.to_frame(torch.stack([parsed.part, parsed.instance]), (H, W)).to(torch.int32))
            scores.append(parsed.scores.float())
            kernels.append(parsed.kernels.to(torch.float16))
        stacked = torch.stack(maps) if maps else torch.zeros((0, 2, H, W), dtype=torch.int32)
        if self.device.type == "cuda":  # start the device-to-host copies, then wait once
            stacked = stacked.to("cpu", non_blocking=True)
            scores, kernels = ([s.to("cpu", non_blocking=True) for s in x] for x in (scores, kernels))
            cand = [None if c is None else tuple(x.to("cpu", non_blocking=True) for x in c) for c in cand]
            torch.cuda.current_stream(self.device).synchronize()
        maps = _Maps(part=stacked[:, 0].numpy().astype(np.uint8), instance=stacked[:, 1].numpy().astype(np.uint16),
                     scores=[s.numpy() for s in scores], kernels=[k.numpy() for k in kernels],
                     cand=None if cout is None else candidates.stack_frames(cand, (H, W), self.embedding_dim))
        self.stage_s["postprocess"] += time.perf_counter() - t2
        self.stage_s["candidates"] += tc
        return maps

    def label_maps(self, frames: np.ndarray, engine=None) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """frames uint8 (B,H,W,3) -> part (B,H,W) uint8, instance (B,H,W) uint16 and people per frame,
        with the dense heads on ``engine`` (default: this predictor's); for parity checks."""
        prev = self.engine
        self.engine = engine or prev
        try:
            m = self._infer(np.asarray(frames))
        finally:
            self.engine = prev
        return m.part, m.instance, [len(s) for s in m.scores]

    def _infer(self, frames: np.ndarray) -> _Maps:
        dev = self._to_device(frames)
        if self.use_streams:
            torch.cuda.current_stream(self.device).wait_event(self._pending_event)
            dev.record_stream(torch.cuda.current_stream(self.device))  # allocated on the copy stream
        return self._run(dev)

    # ------------------------------------------------------------------ public API
    def __call__(self, batch: dict) -> dict:
        """Ray-data style: ``FrameBatch.to_dict()`` in, ``ParsingBatch.to_dict()`` out."""
        fb = FrameBatch.from_dict(batch)
        if len(fb) == 0:
            raise ValueError("empty frame batch")
        return self.parse_batch(fb).to_dict()

    def parse_batch(self, fb: FrameBatch) -> ParsingBatch:
        """A FrameBatch -> its ParsingBatch (label maps at the frames' size + the instance table)."""
        m = self._infer(fb.frames)
        t0 = time.perf_counter()
        counts = np.array([len(s) for s in m.scores], dtype=np.int64)
        st = instance_stats(m.part, m.instance, self.num_classes, fb.frames, counts)  # areas, boxes, part areas/colours
        cand = None
        if m.cand is not None and any(len(s) for s in m.cand[2]):  # compact: box crops (only numpy crosses Ray)
            cp, ci, cs, ck = m.cand
            cand = candidates.from_maps(cp, ci, np.array([len(s) for s in cs]), np.concatenate(cs), np.concatenate(ck),
                                        self.num_classes, fb.frames)
        self.stage_s["instance_table"] += time.perf_counter() - t0
        return ParsingBatch(
            cand=cand, part=m.part, instance=m.instance, frame_index=fb.frame_index, pts=fb.pts, time=fb.time,
            wallclock=fb.wallclock, segment=fb.segment, inst_offset=st.offset, inst_id=st.inst_id,
            inst_score=np.concatenate(m.scores), inst_bbox=st.bbox, inst_area=st.area,
            inst_embedding=np.concatenate(m.kernels), inst_part_area=st.part_area, inst_part_rgb=st.part_rgb,
            time_base=fb.time_base, source_id=fb.source_id,
        )

    def predict(self, frames: np.ndarray | list[np.ndarray]) -> list[FrameParsing]:
        """frames: uint8[B,H,W,3] RGB (or a list of HxWx3 images of any sizes) -> B parsings (with
        per-person part areas)."""
        if isinstance(frames, list):
            if not frames:
                return []
            if len({f.shape for f in frames}) > 1:
                return [r for f in frames for r in self.predict(np.asarray(f)[None])]
            frames = np.stack(frames)
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8[B,H,W,3], got {frames.dtype}{list(frames.shape)}")
        if frames.shape[0] == 0:
            return []
        return self._parsings(self._infer(frames))

    def _parsings(self, m: _Maps) -> list[FrameParsing]:
        out = []
        for part, instance, scores, kernels in zip(m.part, m.instance, m.scores, m.kernels):
            k = int(scores.shape[0])
            pa = np.bincount(instance.ravel().astype(np.int64) * self.num_classes + part.ravel(),
                             minlength=(k + 1) * self.num_classes).reshape(k + 1, self.num_classes)[1:]
            out.append(FrameParsing(part=part, instance=instance, scores=scores, part_areas=pa, embeddings=kernels))
        return out

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
            yield self._parsings(self._run(cur))

    def info(self) -> dict:
        return {
            "model_name": self.model_name,
            "class_names": self.class_names,
            "checkpoint_sha256": self.checkpoint_sha256,
            "device": str(self.device),
            "input_size": list(self.input_size),
            "test_flip": self.flip_perm is not None,
            "test_scales": list(self.test_scales),
            "preprocess": self.preprocess.mode,
            "protocol": self.protocol,
            "runtime": self.engine.info(),
        }
