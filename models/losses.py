"""UniParser losses (paper Sec. 3.4, Eq. 4-6, appendix 6.2 and 6.5).

L_total = w_c * L_c + w_aux * L_aux + w_par * L_par + w_metric * L_metric, default weights
(1, 3, 3, 1). Cosine-similarity maps are used as soft masks through ``relu`` (values in [0,1]).
"""

from __future__ import annotations

import torch
from torch import nn

from ._vision import torchvision  # noqa: F401 (before any torchvision module: see there)
from torchvision.ops import sigmoid_focal_loss  # noqa: E402

from .targets import IGNORE, ImageTargets
from .uniparser import UniParserOutput


def dice_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-3) -> torch.Tensor:
    """Per-map Dice loss 1 - 2*sum(p*t) / (sum(p^2) + sum(t^2) + eps). pred/target (M,h,w) -> (M,)."""
    if valid is not None:
        pred = pred * valid
        target = target * valid
    p, t = pred.flatten(1), target.flatten(1)
    return 1 - 2 * (p * t).sum(1) / ((p * p).sum(1) + (t * t).sum(1) + eps)


class UniParserLoss(nn.Module):
    """Computes the loss terms from a ``UniParserOutput`` and per-image ``ImageTargets``.

    The output must come from ``model(images, centers=[t.pos_cells for t in targets])``.
    Args:
        weights: (w_c, w_aux, w_par, w_metric).
        cihp_variant: paper 6.5 -- no L1 term on absent categories; a pull-together term that
            draws the pixel features of each present category to their mean direction.
        focal_alpha, focal_gamma: focal loss of the centre heatmap.
        metric_margin: off-diagonal similarities with |a| <= margin cost nothing (0 = the
            paper's Eq. 6; the authors' release uses 0.04).
    Returns a dict with ``loss`` and the terms ``loss_center``, ``loss_aux_ins``,
    ``loss_aux_cate``, ``loss_par``, ``loss_metric``.
    """

    def __init__(
        self,
        *,
        weights: tuple[float, float, float, float] = (1.0, 3.0, 3.0, 1.0),
        cihp_variant: bool = False,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        metric_margin: float = 0.0,
    ):
        super().__init__()
        self.weights = tuple(float(w) for w in weights)
        self.cihp_variant = cihp_variant
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.metric_margin = metric_margin

    def forward(self, out: UniParserOutput, targets: list[ImageTargets]) -> dict[str, torch.Tensor]:
        dev = out.center_logits.device
        B = out.center_logits.shape[0]
        n_cls = out.cate_kernels.shape[0]
        heat_t = torch.stack([t.heat for t in targets]).to(dev).unsqueeze(1)
        num_pos = heat_t.sum().clamp(min=1.0)
        loss_c = sigmoid_focal_loss(out.center_logits, heat_t, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum") / num_pos

        ins_terms, cate_terms, par_terms, metric_ins = [], [], [], []
        for i, t in enumerate(targets):
            valid = None
            if t.num_persons:
                labels = t.person_labels.to(dev)  # (P,h,w)
                valid_all = (t.semantic.to(dev) != IGNORE).float()
                person_fg = ((labels > 0) & (labels != IGNORE)).float()
                q = out.ins_maps[i].clamp(min=0)  # (Q,h,w)
                owner = t.pos_person.to(dev)
                ins_terms.append(dice_loss(q, person_fg[owner], valid_all))
                # L_par: fused parsing of each positive kernel vs its person's present parts
                pairs_k, pairs_c = [], []
                for qi in range(q.shape[0]):
                    present = torch.unique(labels[owner[qi]])
                    present = present[(present > 0) & (present != IGNORE)]
                    pairs_k.append(torch.full_like(present, qi))
                    pairs_c.append(present)
                pk, pc = torch.cat(pairs_k), torch.cat(pairs_c)
                if out.parsing is not None:
                    fused = out.parsing[i][pk, pc]
                else:  # index fusion computed only for the needed (kernel, category) pairs
                    fused = q[pk] * out.cate_maps[i][pc].clamp(min=0)
                tgt = (labels[owner[pk]] == pc[:, None, None]).float()
                par_terms.append(dice_loss(fused, tgt, valid_all))
                kc = out.ins_kernels[i][: t.num_persons]
                metric_ins.append((self._metric(kc), t.num_persons))
                valid = valid_all
            # category terms on the semantic map
            sem = t.semantic.to(dev)
            valid = (sem != IGNORE).float() if valid is None else valid
            present = torch.unique(sem[sem != IGNORE])
            qc = out.cate_maps[i]
            onehot = (sem.unsqueeze(0) == present[:, None, None]).float()
            pos_dice = dice_loss(qc[present].clamp(min=0), onehot, valid)
            absent = torch.ones(n_cls, dtype=torch.bool, device=dev)
            absent[present] = False
            if self.cihp_variant:
                feats = out.cate_feats[i]  # (C,h,w)
                pulls = []
                for c in present:
                    m = (sem == c)
                    f = feats[:, m]  # (C,M)
                    mean = nn.functional.normalize(f.mean(1), dim=0, eps=1e-6)
                    pulls.append(1 - (mean @ f).mean())
                neg = torch.stack(pulls).sum() if pulls else qc.sum() * 0
            else:
                neg = (qc[absent].abs() * valid).flatten(1).sum(1).div(valid.sum().clamp(min=1)).sum()
            cate_terms.append((pos_dice.sum() + neg) / n_cls)

        zero = out.center_logits.sum() * 0
        loss_aux_ins = torch.cat(ins_terms).mean() if ins_terms else zero
        loss_aux_cate = torch.stack(cate_terms).mean()
        loss_par = torch.cat(par_terms).mean() if par_terms and torch.cat(par_terms).numel() else zero
        # Eq. 6 per image: (sum|A_cate - I| + sum|A_ins - I|) / (N_cate + N_c), averaged over images
        s_cate = self._metric(out.cate_kernels)
        per_image = [(s_cate + s_ins) / (n_cls + n) for s_ins, n in metric_ins]
        per_image += [s_cate / n_cls] * (B - len(metric_ins))
        loss_metric = torch.stack(per_image).mean()
        w_c, w_aux, w_par, w_m = self.weights
        loss_aux = loss_aux_ins + loss_aux_cate
        total = w_c * loss_c + w_aux * loss_aux + w_par * loss_par + w_m * loss_metric
        return {
            "loss": total,
            "loss_center": loss_c.detach(),
            "loss_aux_ins": loss_aux_ins.detach(),
            "loss_aux_cate": loss_aux_cate.detach(),
            "loss_par": loss_par.detach(),
            "loss_metric": loss_metric.detach(),
        }

    def _metric(self, kernels: torch.Tensor) -> torch.Tensor:
        """sum |A - I| over the cosine-similarity matrix A (n,n) of unit-norm kernels (n,C)."""
        n = kernels.shape[0]
        if n == 0:
            return kernels.sum() * 0
        a = kernels @ kernels.t()
        eye = torch.eye(n, device=a.device, dtype=a.dtype)
        diff = (a - eye).abs()
        if self.metric_margin > 0:
            diff = torch.where(eye.bool(), diff, (diff - self.metric_margin).clamp(min=0))
        return diff.sum()
