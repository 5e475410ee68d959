"""The flow-matching training step as one module, so DistributedDataParallel sees all of it.

DDP synchronises gradients only for work done inside the wrapped module's ``forward``. The
RNA-FM model is used through two calls per step (``encode_condition`` and ``forward``); this
module puts both, and the loss, in one ``forward``:

>>> step = wrap_model(FlowMatchingStep(model), ctx)            # doctest: +SKIP
>>> loss = step(clusters, sizes, drop, x1, generator=noise_gen)  # doctest: +SKIP
>>> loss.backward()                                            # doctest: +SKIP

Pass ``drop`` always (an all-False mask when no dropout is wanted): the null condition then
takes part in every step and every parameter receives a gradient, which DDP requires unless
``find_unused_parameters=True`` (slower).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FlowMatchingStep"]


class FlowMatchingStep(nn.Module):
    """``forward`` = condition encoding + flow-matching loss of an RNA-FM model.

    Parameters
    ----------
    model
        An :class:`rnafm.model.RNAFM` (anything with ``encode_condition`` and
        ``forward(x_t, t, cond)``); held as ``self.model``, so ``state_dict`` keys gain a
        ``model.`` prefix: save ``step.model.state_dict()``.
    time_sampling
        How the loss draws t (:class:`rnafm.flow.TimeSampling`; default uniform).
    """

    def __init__(self, model: nn.Module, time_sampling: str = "uniform") -> None:
        super().__init__()
        self.model = model
        self.time_sampling = time_sampling

    def forward(
        self,
        clusters: Tensor,
        sizes: Tensor | None,
        drop: Tensor,
        x1: Tensor,
        *,
        generator: torch.Generator | None = None,
        x0: Tensor | None = None,
        t: Tensor | None = None,
        head_target: Tensor | None = None,
    ) -> Tensor:
        """Scalar loss for cluster means (B, K, D), sizes (B, K), drop (B,) and targets (B, G).

        With ``head_target`` (B, G), the z-scored expression, the slide head's squared error on
        the undropped condition is added (direct supervision of the image path); a model
        without a slide head ignores it.
        """
        from rnafm.flow import flow_matching_loss

        full = self.model.encode_condition(clusters, sizes)  # Condition: vec (B, H)
        cond = self.model.drop_condition(full, drop)  # null rows where drop
        loss = flow_matching_loss(
            self.model, x1, cond, generator=generator, x0=x0, t=t, time_sampling=self.time_sampling
        )  # ()
        if head_target is not None and getattr(self.model, "slide_head", None) is not None:
            est = self.model.predict_slide(full)  # (B, G)
            loss = loss + torch.mean((est.float() - head_target) ** 2)  # ()
        return loss
