"""Single-path updates in every fairseq training mode.

An update must change only the parameters its subnet used, and only their optimizer state
(DESIGN.md section 5). fairseq breaks this in two places, both of which would let Adam move
unsampled operator families on stale momentum and advance their state:
- `legacy_ddp` gives every parameter that has no gradient a zero gradient before the
  all-reduce, unless the parameter does not require grad;
- the FP16 optimizer (`--fp16`/`--bf16`) steps fp32 master copies whose gradients it
  never resets to None.

`SinglePathGuard` marks, after each backward pass, the parameters the subnet did not reach
(their gradient is None) as not requiring grad, so `legacy_ddp` skips them; before the step
it drops the FP16 master copies' gradients of those parameters, so Adam skips them too; after
the step it restores `requires_grad`. The set is found by autograd itself, so a parameter the
subnet used can never be frozen by mistake. Every rank trains the same subnet, so every rank
marks the same set and `legacy_ddp`'s buckets stay aligned.

fairseq's default flat FP16 buffer (CUDA only) is one tensor for all parameters: it cannot
leave a part of itself out of the step, so it is refused with a one-line error.
"""
from __future__ import annotations

from torch import nn

from fairseq_nas.errors import FairseqNasError

FLAT_FP16_ERROR = (
    "supernet training with --fp16/--bf16 needs --fp16-no-flatten-grads or --memory-efficient-fp16 "
    "(--memory-efficient-bf16): fairseq's flat FP16 buffer steps every parameter, so Adam would move the "
    "operators the update's subnet did not use")


class SinglePathGuard:
    def __init__(self) -> None:
        self._frozen: list[nn.Parameter] = []

    @property
    def frozen(self) -> list[nn.Parameter]:
        """Parameters the current update's subnet did not use."""
        return list(self._frozen)

    def check_optimizer(self, optimizer) -> None:
        """Refuse an optimizer that cannot keep parameters out of a step (before any work)."""
        if getattr(optimizer, "has_flat_params", False):
            raise FairseqNasError(FLAT_FP16_ERROR)

    def mark_unused(self, model: nn.Module) -> None:
        """After a backward pass: parameters without a gradient leave the update."""
        for p in model.parameters():
            if p.requires_grad and p.grad is None:
                p.requires_grad_(False)
                self._frozen.append(p)

    def before_step(self, optimizer) -> None:
        """FP16 master copies of unused parameters lose their (zero) gradient: Adam skips them."""
        if not self._frozen:
            return
        fp16_params = getattr(optimizer, "fp16_params", None)
        fp32_params = getattr(optimizer, "fp32_params", None)
        if fp16_params is None or not isinstance(fp32_params, list):
            return  # fp32 and memory-efficient FP16: unused parameters have no gradient already
        frozen = {id(p) for p in self._frozen}
        for p16, p32 in zip(fp16_params, fp32_params):
            if id(p16) in frozen:
                p32.grad = None

    def release(self) -> None:
        """After the step (or when a new update starts): every parameter trains again."""
        for p in self._frozen:
            p.requires_grad_(True)
        self._frozen.clear()
