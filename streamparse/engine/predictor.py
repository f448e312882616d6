"""Predictor: a model + the preprocessing + the device + the post-processing, no Ray (house rule 8).

``__call__(FrameBatch dict) -> ParsingBatch dict`` for the pipeline; ``predict(frames) ->
list[FrameParsing]`` for single images. The data path, in order: frames (uint8, host) -> device
(pinned buffers and a copy stream on CUDA) -> ``Preprocessor`` (resize, normalise, pad: kornia on
the device) -> ``UniParser`` dense heads -> ``pick_centres`` -> ``UniParser.instances`` (or
``models.tta.forward_tta`` with test-time augmentation) -> ``parse_image`` per frame -> label maps
back at the frame's size -> host (non-blocking copies on CUDA) -> ``ParsingBatch``.
On CPU the same code runs without streams, channels_last, under inference_mode.
The post-processing is a protocol object (``streamparse.engine.protocols``: the default one, or the
authors', ``model.protocol=official``: the preset of converted authors' checkpoints), chosen by the plan.

Built from config in ``streamparse.plan`` (the only place config becomes objects).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterable, Iterator

import numpy as np
import torch

from streamparse.models.postprocess import PostprocessParams, pick_centres
from streamparse.engine.preprocess import Preprocessor, frames_to_tensor
from streamparse.engine.protocols import DefaultProtocol, Maps
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
        protocol: the post-processing (``streamparse.engine.protocols``: ``DefaultProtocol`` or the
            authors' ``OfficialProtocol``; ``make_protocol`` builds one from the plan's name).
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
        protocol,
        runtime: dict,
        checkpoint_sha256: str | None = None,
        checkpoint_path: str | None = None,
    ):
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
        self.protocol = protocol if protocol is not None else DefaultProtocol()
        self.protocol.check(self)
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

    def autocast(self):
        if self.device.type == "cuda" and self.amp != "none":
            return torch.autocast("cuda", dtype=torch.float16 if self.amp == "fp16" else torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ model
    def forward(self, frames_dev: torch.Tensor, x: torch.Tensor, size: tuple[int, int]):
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

    def official_frame_parsing(self, op) -> FrameParsing:
        """An ``OfficialParsing`` as exclusive label maps (where people overlap, the highest centre
        score wins; people left without pixels are dropped)."""
        return self._parsings(self.protocol.exclusive(op))[0]

    @torch.inference_mode()
    def predict_official(self, frames: np.ndarray, semantic: bool = False) -> list:
        """``protocol="official"`` only: frames uint8[B,H,W,3] -> B ``OfficialParsing`` (the per-person
        maps the evaluator scores, and with ``semantic`` the authors' semantic map; ``predict`` gives
        the exclusive label maps)."""
        if self.protocol.name != "official":
            raise ValueError("predict_official needs protocol 'official'")
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8[B,H,W,3], got {frames.dtype}{list(frames.shape)}")
        return self.protocol.parsings(self, self._on_device(frames), semantic)[0]

    @torch.inference_mode()
    def _run(self, frames_dev: torch.Tensor) -> Maps:
        return self.protocol.maps(self, frames_dev)

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

    def _on_device(self, frames: np.ndarray) -> torch.Tensor:
        dev = self._to_device(frames)
        if self.use_streams:
            torch.cuda.current_stream(self.device).wait_event(self._pending_event)
            dev.record_stream(torch.cuda.current_stream(self.device))  # allocated on the copy stream
        return dev

    def _infer(self, frames: np.ndarray) -> Maps:
        return self._run(self._on_device(frames))

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

    def _parsings(self, m: Maps) -> list[FrameParsing]:
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
            "protocol": self.protocol.name,
            "runtime": self.engine.info(),
        }
