"""ShareLinear: a frozen nn.Linear plus the routed Share delta, and attach/detach for a whole model.

Outside a route context (``learner.routing.routed``) a ShareLinear *is* its base layer: the forward calls the
original nn.Linear and nothing else, so an attached model with no route is bit-identical to the plain model.
Inside a context, every row adds its own task's delta from the pinned snapshot (row −1: none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from learner import routing
from learner.share.bank import ShareBank
from learner.share.math import LayerBasis, routed_low_rank


class ShareLinear(nn.Module):
    """Wraps the original nn.Linear (frozen W0 and bias, untouched) and adds s·β·εβ_t·εα_tᵀ·αᵀx per row.

    The layer keeps only its name (``key``) — bases, scaling and coefficients come from the snapshot the
    caller pinned, so Phase 3 can replace the bases and a hot-swap can replace coefficients atomically.
    """

    def __init__(self, base: nn.Linear, key: str) -> None:
        super().__init__()
        self.base = base
        self.key = key
        self.in_features = base.in_features
        self.out_features = base.out_features
        for param in self.base.parameters():
            param.requires_grad_(False)

    @property
    def weight(self) -> Tensor:  # code that inspects q_proj.weight (dtype/device probes) keeps working
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        ctx = routing.current()
        if ctx is None:
            return out
        state = ctx.snapshot.layer(self.key)
        basis = state.basis
        beta, alpha, eb, ea = basis.beta, basis.alpha, state.eb, state.ea
        if beta.dtype != x.dtype or beta.device != x.device:  # e.g. autocast; the bank normally matches
            beta, alpha = beta.to(x.device, x.dtype), alpha.to(x.device, x.dtype)
            eb, ea = eb.to(x.device, x.dtype), ea.to(x.device, x.dtype)
        w = routed_low_rank(x, ctx.row_tasks, alpha, eb, ea)
        # out + s·w·βᵀ in one fused addmm: no separate (tokens × n) delta tensor to write and re-read.
        fused = torch.addmm(
            out.reshape(-1, self.out_features), w.reshape(-1, w.shape[-1]), beta.T, alpha=basis.scaling
        )
        return fused.view_as(out)

    def extra_repr(self) -> str:
        return f"key={self.key!r}, in_features={self.in_features}, out_features={self.out_features}"


def find_target_layers(model: nn.Module, target_modules: Iterable[str]) -> dict[str, nn.Linear]:
    """Every nn.Linear whose last name component is one of ``target_modules`` (PEFT's default matching),
    keyed by its full module name, e.g. ``model.layers.0.self_attn.q_proj``."""
    targets = set(target_modules)
    found = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets
    }
    if not found:
        raise ValueError(f"no nn.Linear named {sorted(targets)} in the model")
    return found


def attach_share(
    model: nn.Module,
    bases_by_layer: Mapping[str, LayerBasis],
    *,
    base_model_id: str | None = None,
    bank: ShareBank | None = None,
) -> ShareBank:
    """Replace each basis' target nn.Linear by a ShareLinear and return the bank serving them.

    The bank's snapshot lives on the layers' device and dtype. Pass ``bank`` to attach an existing bank (its
    bases must be ``bases_by_layer``'s layers) to another copy of the model.
    """
    modules = dict(model.named_modules())
    for key, basis in bases_by_layer.items():
        module = modules.get(key)
        if isinstance(module, ShareLinear):
            raise ValueError(f"layer {key} already carries a ShareLinear; detach_share first")
        if not isinstance(module, nn.Linear):
            raise ValueError(f"layer {key!r} is not an nn.Linear of this model")
        if (module.out_features, module.in_features) != (basis.out_features, basis.in_features):
            raise ValueError(
                f"layer {key}: model shape ({module.out_features} × {module.in_features}) differs from the "
                f"basis ({basis.out_features} × {basis.in_features}) — bases for another model?"
            )
    if not bases_by_layer:
        raise ValueError("no layer bases to attach")
    first = modules[next(iter(bases_by_layer))]
    assert isinstance(first, nn.Linear)
    if bank is None:
        bank = ShareBank(
            bases_by_layer, device=first.weight.device, dtype=first.weight.dtype, base_model_id=base_model_id
        )
    elif set(bank.layer_names) != set(bases_by_layer):
        raise ValueError("the given bank serves different layers than bases_by_layer")
    for key in bases_by_layer:
        _set_submodule(model, key, ShareLinear(modules[key], key))
    return bank


def detach_share(model: nn.Module) -> int:
    """Put the original nn.Linear modules back; returns how many layers were restored."""
    restored = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, ShareLinear):
            _set_submodule(model, name, module.base)
            restored += 1
    return restored


def share_layers(model: nn.Module) -> dict[str, ShareLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ShareLinear)}


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
