"""Iterative training with a mentor (MLNT paper, section 3.4).

After a round of MLNT training, the model that round released (the better of student and EMA teacher on the
validation set) becomes the *mentor* of the next round. The paper names the round's best teacher; here the student
becomes the mentor when it beat every validated teacher, as it is then the round's best model. The mentor does two
things:

* it filters the training set: a sample is kept only if its given label is among the mentor's ``top_k``
  predictions (``top_k = 1``: the label must equal the mentor's prediction, the paper's rule);
* its predictions are blended into the consistency target:
  ``target = (1 - blend) * teacher_probs + blend * mentor_probs``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model._checks import check_float, check_int, check_labels, check_tensor


def mentor_keep_mask(mentor_probs: Tensor, labels: Tensor, *, top_k: int = 1) -> Tensor:
    """Bool ``[N]``: True where the given label is among the mentor's ``top_k`` most probable classes."""
    check_tensor("mentor_probs", mentor_probs, ndim=2, floating=True)
    check_tensor("labels", labels, ndim=1, dtype=torch.int64)
    n, k = mentor_probs.shape
    if labels.shape[0] != n:
        raise ValueError(f"labels: expected {n} entries (one per mentor prediction), found {labels.shape[0]}")
    check_int("top_k", top_k, low=1, high=k)
    check_labels("labels", labels, k)
    top = mentor_probs.topk(top_k, dim=1).indices
    return (top == labels[:, None]).any(dim=1)


def consistency_target(teacher_probs: Tensor, mentor_probs: Tensor | None, *, blend: float) -> Tensor:
    """The consistency target: the teacher's probabilities, blended with the mentor's when there is one."""
    check_float("blend", blend, low=0.0, high=1.0)
    if mentor_probs is None:
        return teacher_probs
    if mentor_probs.shape != teacher_probs.shape:
        raise ValueError(f"mentor_probs: expected shape {tuple(teacher_probs.shape)} like teacher_probs, "
                         f"found {tuple(mentor_probs.shape)}")
    return torch.lerp(teacher_probs, mentor_probs, blend)
