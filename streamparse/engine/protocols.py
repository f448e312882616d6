"""Post-processing protocols: how a ``Predictor`` turns a batch of frames into label maps.

One interface, two implementations, chosen by the plan (``model.protocol``; built by
``make_protocol`` in ``streamparse.engine.factory``):

- ``DefaultProtocol``: streamparse's (``models.postprocess``: exclusive label maps decoded at the
  feature resolution, low-score candidates, test-time augmentation);
- ``OfficialProtocol``: the authors' (``models.postprocess_official``: overlapping per-person maps at
  the frame's resolution, which the evaluator scores; as label maps the highest centre score wins
  where people overlap).

``maps(pred, frames_dev) -> Maps``: frames uint8 (B,H,W,3) on the predictor's device -> the batch's
label maps at the frames' size (host numpy), each person's score and unit instance kernel. The
protocol reads the predictor's parts (``preprocess``, ``engine``, ``model``, ``params``) and adds its
seconds to ``pred.stage_s``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from streamparse import candidates
from streamparse.models.candidates import candidate_outputs, parse_candidates
from streamparse.models.postprocess import parse_image


@dataclass
class Maps:
    """A batch's label maps at the frames' size (host numpy) and each frame's people's scores."""

    part: np.ndarray  # uint8 (B,H,W)
    instance: np.ndarray  # uint16 (B,H,W)
    scores: list[np.ndarray]  # B x float32 (K_b,)
    kernels: list[np.ndarray]  # B x float16 (K_b, D): each kept person's unit instance kernel (None: unknown)
    cand: tuple | None = None  # low-score candidates: (part (B,H,W), instance (B,H,W), B scores, B kernels)


class DefaultProtocol:
    """streamparse's post-processing (``models.postprocess.parse_image`` per frame, candidates)."""

    name = "default"

    def check(self, pred) -> None:
        """Nothing to refuse: every model, test-time augmentation included."""

    def maps(self, pred, frames_dev: torch.Tensor) -> Maps:
        b, H, W, _ = frames_dev.shape
        t0 = time.perf_counter()
        x, (nh, nw) = pred.preprocess(frames_dev)
        t1 = time.perf_counter()
        with pred.autocast():
            out = pred.forward(frames_dev, x, (nh, nw))
        t2 = time.perf_counter()
        pred.stage_s["preprocess"] += t1 - t0
        pred.stage_s["network"] += t2 - t1
        heat = out.heatmap.float()
        tc = time.perf_counter()
        cout = None
        if pred.flip_perm is None and len(pred.test_scales) == 1:  # (no candidates with test-time augmentation)
            cout = candidate_outputs(pred.model, out, heat, pred.params)
        tc = time.perf_counter() - tc  # (the candidates' share of the post-processing: stage_s["candidates"])
        cuda = pred.device.type == "cuda"
        maps, scores, kernels, cand = [], [], [], [None] * b
        part, instance = np.empty((b, H, W), np.uint8), np.empty((b, H, W), np.uint16)  # (CPU: filled per frame)
        for i in range(b):
            parsed, c, dt = self._frame(pred, out, cout, heat, i, (nh, nw))
            tc += dt
            if c is not None:  # only frames with candidates pay for their maps
                if cuda:
                    cmaps = pred.preprocess.to_frame(torch.stack([c.part, c.instance]), (H, W)).to(torch.uint8)
                else:
                    cmaps = np.empty((2, H, W), np.uint8)
                    pred.preprocess.labels_to_frame(c.part, c.instance, (H, W), cmaps[0], cmaps[1])
                    cmaps = torch.from_numpy(cmaps)
                cand[i] = (cmaps, c.scores.float(), c.kernels.to(torch.float16))
            if cuda:
                maps.append(pred.preprocess.to_frame(torch.stack([parsed.part, parsed.instance]), (H, W)).to(torch.int32))
            else:
                pred.preprocess.labels_to_frame(parsed.part, parsed.instance, (H, W), part[i], instance[i])
            scores.append(parsed.scores.float())
            kernels.append(parsed.kernels.to(torch.float16))
        if cuda:  # start the device-to-host copies, then wait once
            stacked = (torch.stack(maps) if maps else torch.zeros((0, 2, H, W), dtype=torch.int32)).to("cpu", non_blocking=True)
            scores, kernels = ([s.to("cpu", non_blocking=True) for s in x] for x in (scores, kernels))
            cand = [None if c is None else tuple(x.to("cpu", non_blocking=True) for x in c) for c in cand]
            torch.cuda.current_stream(pred.device).synchronize()
            part, instance = stacked[:, 0].numpy().astype(np.uint8), stacked[:, 1].numpy().astype(np.uint16)
        res = Maps(part=part, instance=instance,
                   scores=[s.numpy() for s in scores], kernels=[k.numpy() for k in kernels],
                   cand=None if cout is None else candidates.stack_frames(cand, (H, W), pred.embedding_dim))
        pred.stage_s["postprocess"] += time.perf_counter() - t2
        pred.stage_s["candidates"] += tc
        return res

    @staticmethod
    def _frame(pred, out, cout, heat: torch.Tensor, i: int, size: tuple[int, int]):
        """Frame ``i``: its parsing, its candidates' parsing (None without any) and the candidates' seconds."""
        p, stride = pred.params, pred.model.stride
        parsed = parse_image(
            heat=heat[i, 0], cells=out.centers[i], ins_kernels=out.ins_kernels[i].float(), ins_maps=out.ins_maps[i],
            cate_maps=out.cate_maps[i], parsing=None if out.parsing is None else out.parsing[i],
            stride=stride, out_size=size, mask_thresh=p.mask_thresh, merge_cos=p.merge_cos,
            cate_score_thresh=p.cate_score_thresh,
        )
        if cout is None or not cout.centers[i].numel():
            return parsed, None, 0.0
        t = time.perf_counter()
        c = parse_candidates(heat=heat[i, 0], cells=cout.centers[i], ins_kernels=cout.ins_kernels[i].float(),
                             ins_maps=cout.ins_maps[i], cate_maps=cout.cate_maps[i],
                             parsing=None if cout.parsing is None else cout.parsing[i], det_instance=parsed.instance,
                             det_kernels=parsed.kernels, stride=stride, out_size=size,
                             mask_thresh=p.mask_thresh, merge_cos=p.merge_cos, cate_score_thresh=p.cate_score_thresh)
        return parsed, (c if c.scores.numel() else None), time.perf_counter() - t


class OfficialProtocol:
    """The authors' post-processing with the thresholds ``params`` (``OfficialParams``): per-person maps
    that may overlap (``parsings``, what the evaluator scores) and, for the pipeline, exclusive label
    maps where the highest centre score wins (people left without pixels are dropped)."""

    name = "official"

    def __init__(self, params):
        self.params = params

    def check(self, pred) -> None:
        """``ValueError`` for what the authors' protocol cannot run: test-time augmentation, another stride."""
        if pred.flip_perm is not None or len(pred.test_scales) > 1:
            raise ValueError("protocol 'official' runs without test-time augmentation (model.test_flip, model.test_scales)")
        if getattr(pred.model, "stride", None) != self.params.upsample:
            raise ValueError(f"protocol 'official' needs a stride-{self.params.upsample} model, "
                             f"{pred.model_name} has stride {getattr(pred.model, 'stride', None)}")

    def parsings(self, pred, frames_dev: torch.Tensor, semantic: bool = False) -> tuple[list, object]:
        """One ``OfficialParsing`` (overlapping per-person maps at the frames' resolution) per frame, and
        the dense heads (for the people's kernels)."""
        from streamparse.models.postprocess_official import parse_official

        b, H, W, _ = frames_dev.shape
        x, (nh, nw) = pred.preprocess(frames_dev)
        with pred.autocast():
            out = pred.engine(x, keep_grid_pad=True)  # dense heads only
        return [parse_official(center_logits=out.center_logits[i, 0].float(), ins_feats=out.ins_feats[i],
                               cate_maps=out.cate_maps[i, 1:], grid=pred.model.grid, valid_hw=(nh, nw), out_hw=(H, W),
                               params=self.params, semantic=semantic) for i in range(b)], out

    def maps(self, pred, frames_dev: torch.Tensor) -> Maps:
        from streamparse.models.postprocess_official import overlap_label_maps

        ops, out = self.parsings(pred, frames_dev)
        parts, insts, scores, kernels = [], [], [], []
        kfeats = out.kernel_feats if out.kernel_feats is not None else out.ins_feats
        for i, op in enumerate(ops):
            part, instance, kept = overlap_label_maps(op.labels, op.scores)
            parts.append(part.cpu().numpy().astype(np.uint8))
            insts.append(instance.cpu().numpy().astype(np.uint16))
            scores.append(op.scores[kept].float().cpu().numpy())
            kernels.append(pred.model.sample_kernels(kfeats[i], op.cells[kept]).to(torch.float16).cpu().numpy())
        return Maps(part=np.stack(parts), instance=np.stack(insts), scores=scores, kernels=kernels)

    @staticmethod
    def exclusive(op) -> Maps:
        """One ``OfficialParsing`` as a one-frame ``Maps`` of exclusive label maps (kernels unknown)."""
        from streamparse.models.postprocess_official import overlap_label_maps

        part, instance, kept = overlap_label_maps(op.labels, op.scores)
        return Maps(part=part.cpu().numpy()[None].astype(np.uint8), instance=instance.cpu().numpy()[None].astype(np.uint16),
                    scores=[op.scores[kept].float().cpu().numpy()], kernels=[None])


def make_protocol(name: str, postprocess: dict):
    """The protocol ``name`` ('default' | 'official') with the thresholds of ``postprocess``
    (``plan.postprocess_kwargs``: the official one takes its centre, mask and category thresholds)."""
    if name == "default":
        return DefaultProtocol()
    if name == "official":
        from streamparse.models.postprocess_official import OfficialParams

        return OfficialProtocol(OfficialParams(ctr_score=postprocess["center_thresh"], mask_thr=postprocess["mask_thresh"],
                                               cate_score_thr=postprocess["cate_score_thresh"]))
    raise ValueError(f"protocol must be default or official, got {name!r}")
