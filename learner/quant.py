"""Int8 weights for CPU decoding, with the float path kept where gradients flow.

Decoding one token reads every weight once, so on CPU its speed is set by bytes per token: float32 reads
4 bytes a weight, int8 reads 1. ``Int8Linear`` is an ``nn.Linear`` (so Share's ``ShareLinear`` and PEFT still
wrap it) whose forward, when no gradient is being recorded, runs fbgemm's dynamic-int8 matmul on weights
quantized per output channel (activations are quantized per token — see ``Int8Linear`` — to 7 bits on CPUs
without VNNI: see ``reduce_range``). With gradients enabled it runs
the float weight exactly as before — a quantized matmul passes no gradient to its input, and Share training
needs the gradient through every frozen layer above a routed one — so a night that trains on this model trains
the float model and evaluates (under ``torch.inference_mode``) what serving runs.

The routed Share delta stays in float: ``ShareLinear`` adds it beside its base layer's output.
Only CPU: on CUDA the model runs in bf16 and is left alone (``quantize_for_decode`` refuses other devices).
"""

from __future__ import annotations

import copy
import functools
import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from learner.cpu import cpu_info

WeightFormat = Literal["float", "int8"]

_ops: Any = torch.ops.quantized
_TINY = torch.finfo(torch.float32).tiny

#: CPU flags whose int8 dot product accumulates u8×s8 products straight into int32 (fbgemm's VNNI kernels).
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.cache
def reduce_range() -> bool:
    """Whether activations must be quantized to 7 bits. Without VNNI, fbgemm's AVX2 kernel multiplies with
    ``vpmaddubsw``, which sums pairs of u8×s8 products into a *saturating* int16: with the full 8-bit range
    a pair can overflow it (measured on an AVX2-only EPYC: 16.6% relative error on a random 64→48 layer with
    the full range, 1.5% with 7 bits). With VNNI the full range is exact and one bit more precise. A CPU
    whose flags cannot be read (``learner.cpu.cpu_info``: none) counts as one without VNNI."""
    flags = cpu_info().flags
    return not any(flag in flags for flag in _VNNI_FLAGS)


def _quantize_weight(weight: Tensor) -> Tensor:
    """Symmetric per-output-channel int8 (zero point 0), the format fbgemm's prepack expects."""
    w = weight.detach().float()
    scales = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
    zero_points = torch.zeros(w.shape[0], dtype=torch.long)
    with (
        warnings.catch_warnings()
    ):  # torch marks quantized tensors as legacy; fbgemm's linear still needs one
        warnings.simplefilter("ignore", UserWarning)
        return torch.quantize_per_channel(w, scales, zero_points, 0, torch.qint8)


def input_grid() -> tuple[float, int]:
    """The fixed activation grid (scale, zero point) of rows scaled into [−1, 1]: 7 bits without VNNI
    (``reduce_range``), 8 with. They are the parameters fbgemm's dynamic kernel derives itself for a call whose
    values span exactly [−1, 1] (tests/test_quant.py pins the equality against that kernel)."""
    return (2.0 / 127.0, 64) if reduce_range() else (2.0 / 255.0, 128)


def _fixed_grid_linear(rows: Tensor, packed: Any) -> Tensor:
    """``rows`` (each already in [−1, 1]) times the packed int8 weight, quantized on the fixed ``input_grid``,
    float32 out. One fbgemm call: no range search over the call and no extra row to pin it (see Int8Linear)."""
    scale, zero_point = input_grid()
    return _ops.linear_with_input_q_dq_qweight_dq_output_fp32(rows, scale, zero_point, packed)


def _int8_matmul(x: Tensor, packed: Any, bias: Tensor | None) -> Tensor:
    """``x @ Wᵀ + b`` for the packed int8 ``W``, each row quantized per token (see ``Int8Linear``); 2-D out."""
    rows = x.reshape(-1, x.shape[-1]).float()
    scale = torch.linalg.vector_norm(rows, float("inf"), dim=1, keepdim=True).clamp_min_(_TINY)  # max |row|
    y = _fixed_grid_linear(rows / scale, packed)
    return y.mul_(scale) if bias is None else torch.addcmul(bias, y, scale)


class Int8Linear(nn.Linear):
    """A frozen linear layer that decodes with int8 weights; see the module docstring.

    Activations are quantized **per token**: fbgemm's dynamic kernel quantizes a whole call with one scale,
    so one outlier token (Qwen's first token carries activations tens of times larger than the rest) would
    set the grid for every other token of a prefill, and a row's result would depend on its batch mates and
    on how many tokens the call holds. Each row is therefore divided by its own absolute maximum and quantized
    on one fixed grid over [−1, 1] (``input_grid``; fbgemm's ``linear_with_input_q_dq_qweight_dq_output_fp32``
    takes the grid as arguments): every row meets the same grid whatever else is in the call, the integer
    matmul is exact, and the row is multiplied back by its scale. So a token's output is bit-identical alone,
    in a batch, or among a prompt-lookup draft (measured on random layers with one ×30 outlier row: 1.5–1.8%
    relative error on the other rows against 40–49% per call). The grid is the one the dynamic kernel picks
    for a call spanning exactly [−1, 1], so the results equal the earlier construction (the dynamic kernel
    with a +1/−1 sentinel row appended) bit for bit, at one call per layer instead of a concatenation, a
    range search and a slice (docs/runtime.md has the decode speed it bought).

    ``keep_float=False`` drops the float weight (a serving-only copy saves 3 bytes per weight); such a layer
    can no longer train and raises if asked to run with gradients enabled.
    """

    def __init__(self, linear: nn.Linear, *, keep_float: bool = True) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        if linear.weight.device.type != "cpu":
            raise ValueError(f"int8 decoding runs on CPU; this layer lives on {linear.weight.device}")
        self._packed: Any = _ops.linear_prepack(_quantize_weight(linear.weight), None)
        self._bias = linear.bias.detach().float().clone() if linear.bias is not None else None
        self._fused: FusedInt8 | None = None  # set by fuse_siblings: the group's one call computes this layer
        self._fused_index = 0  # this layer's place in its group
        self.keep_float = keep_float
        if keep_float:
            self.weight = linear.weight
            self.bias = linear.bias
        else:
            # A zero-size stand-in keeps `.weight.dtype/.device` probes working without 4 bytes a weight.
            self.weight = nn.Parameter(linear.weight.new_empty(0), requires_grad=False)
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            if not self.keep_float:
                raise RuntimeError("this int8 layer dropped its float weight and cannot run with gradients")
            return F.linear(x, self.weight, self.bias)
        if self._fused is not None:
            y = self._fused.output(x, self._fused_index)
        else:
            y = _int8_matmul(x, self._packed, self._bias)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def __deepcopy__(self, memo: dict[int, Any]) -> Int8Linear:
        # The packed weights are an opaque fbgemm object: copy by re-packing from its own int8 weights.
        clone = nn.Module.__new__(type(self))
        nn.Module.__init__(clone)
        clone.in_features, clone.out_features, clone.keep_float = (
            self.in_features,
            self.out_features,
            self.keep_float,
        )
        clone._packed = (
            None if self._packed is None else _ops.linear_prepack(self.int8_weight().clone(), None)
        )
        clone._bias = None if self._bias is None else self._bias.clone()
        clone._fused = None if self._fused is None else copy.deepcopy(self._fused, memo)
        clone._fused_index = self._fused_index
        clone.weight = nn.Parameter(self.weight.detach().clone(), requires_grad=self.weight.requires_grad)
        clone.bias = (
            None if self.bias is None else nn.Parameter(self.bias.detach().clone(), requires_grad=False)
        )
        memo[id(self)] = clone
        return clone

    def int8_weight(self) -> Tensor:
        """This layer's quantized weight (a per-channel qint8 tensor), from its own or its group's packing."""
        if self._fused is not None:
            return self._fused.member_weight(self._fused_index)
        qweight, _ = _ops.linear_unpack(self._packed)
        return qweight

    def int8_bytes(self) -> int:
        return self.in_features * self.out_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8, keep_float={self.keep_float}"


def quantize_for_decode(model: nn.Module, *, keep_float: bool = True, fuse: bool = True) -> int:
    """Swap every float ``nn.Linear`` of ``model`` (a layer inside a ``ShareLinear`` too) for an ``Int8Linear``,
    in place; returns how many were swapped. ``fuse`` then gives sibling projections one call (``fuse_siblings``).

    The output head is tied to the input embedding in small Qwen models: the head's float weight is the
    embedding table, which the model keeps in any case, so it is never dropped there."""
    if not supported():
        raise RuntimeError(
            "this torch build has no fbgemm/x86 quantized engine; int8 decoding is unavailable"
        )
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embedding = get_embeddings() if callable(get_embeddings) else None
    tied = embedding.weight if isinstance(embedding, nn.Module) else None
    swapped = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is not nn.Linear or child.weight.dtype not in (torch.float32, torch.bfloat16):
                continue
            keep = keep_float or child.weight is tied
            setattr(module, child_name, Int8Linear(child, keep_float=keep))
            swapped += 1
    if fuse:
        fuse_siblings(model)
    return swapped


#: Sibling projections that read the same input tensor in the models served (Qwen2/Llama attention and MLP).
FUSE_GROUPS: tuple[tuple[str, ...], ...] = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class FusedInt8:
    """One int8 call for sibling layers that read the same input (q/k/v of an attention block, gate/up of an
    MLP): their weights packed side by side, so a decode step makes one fbgemm call where it made three or
    two. At batch 1 a call's fixed cost rivals its arithmetic (docs/runtime.md has the measured gain).

    The first member called with an input computes every member's output and keeps the others' until they
    ask for them with the *same* tensor (identity and version, so an in-place change or a different input
    recomputes, where the tensor tracks its version — inference-mode tensors track none, see ``_version``);
    the kept outputs are dropped as soon as each member has taken its own. Each output column is the same
    integer dot product as in the unfused layer, so the results are bit-identical to it."""

    def __init__(self, members: list[Int8Linear]) -> None:
        weights = [m.int8_weight() for m in members]
        ints = torch.cat([w.int_repr() for w in weights])
        scales = torch.cat([w.q_per_channel_scales() for w in weights])
        joined = torch._make_per_channel_quantized_tensor(ints, scales, torch.zeros_like(scales).long(), 0)
        self.packed: Any = _ops.linear_prepack(joined, None)
        self.bounds = [0]
        for m in members:
            self.bounds.append(self.bounds[-1] + m.out_features)
        biases = [m._bias if m._bias is not None else torch.zeros(m.out_features) for m in members]
        self.bias = torch.cat(biases) if any(m._bias is not None for m in members) else None
        self._kept: tuple[Tensor, int, list[Tensor], set[int]] | None = None

    def output(self, x: Tensor, index: int) -> Tensor:
        kept = self._kept  # one read: another thread may replace it meanwhile, which only costs a recompute
        if kept is not None and kept[0] is x and kept[1] == _version(x) and index in kept[3]:
            kept[3].discard(index)
            if not kept[3]:
                self._kept = None
            return kept[2][index]
        y = _int8_matmul(x, self.packed, self.bias)
        outs = [y[:, a:b] for a, b in zip(self.bounds, self.bounds[1:], strict=False)]
        waiting = set(range(len(outs))) - {index}
        self._kept = (x, _version(x), outs, waiting) if waiting else None
        return outs[index]

    def member_weight(self, i: int) -> Tensor:
        qweight, _ = _ops.linear_unpack(self.packed)
        return qweight[self.bounds[i] : self.bounds[i + 1]]

    def __deepcopy__(self, memo: dict[int, Any]) -> FusedInt8:
        clone = FusedInt8.__new__(FusedInt8)
        memo[id(self)] = clone
        qweight, _ = _ops.linear_unpack(self.packed)
        clone.packed = _ops.linear_prepack(qweight.clone(), None)
        clone.bounds = list(self.bounds)
        clone.bias = None if self.bias is None else self.bias.clone()
        clone._kept = None
        return clone


def _version(x: Tensor) -> int:
    """The tensor's in-place version; inference-mode tensors keep none (the models served change no input of
    a projection in place between its siblings' calls), so they count as version −1."""
    return -1 if x.is_inference() else x._version


def _int8_member(layer: nn.Module | None) -> Int8Linear | None:
    """The Int8Linear behind a child: itself, or the base layer of a Share wrapper (``ShareLinear.base``)."""
    if isinstance(layer, Int8Linear):
        return layer
    base = getattr(layer, "base", None)
    return base if isinstance(base, Int8Linear) else None


def fuse_siblings(model: nn.Module) -> int:
    """Give every complete group of ``FUSE_GROUPS`` siblings (all int8, none fused yet, same input width) one
    shared int8 call; the members drop their own packed weights. Returns the number of groups fused."""
    fused = 0
    for module in list(model.modules()):
        for names in FUSE_GROUPS:
            members = [_int8_member(getattr(module, n, None)) for n in names]
            if any(m is None or m._fused is not None for m in members):
                continue
            group = [m for m in members if m is not None]
            if len({m.in_features for m in group}) != 1:
                continue
            shared = FusedInt8(group)
            for i, m in enumerate(group):
                m._fused, m._fused_index, m._packed = shared, i, None
            fused += 1
    return fused


def weight_format(model: nn.Module) -> WeightFormat:
    return "int8" if any(isinstance(m, Int8Linear) for m in model.modules()) else "float"


def supported() -> bool:
    return any(engine in torch.backends.quantized.supported_engines for engine in ("x86", "fbgemm"))


def resolve_weights(weights: str, device: str) -> WeightFormat:
    """``auto``: int8 on CPU where the quantized engine exists (docs/runtime.md has the measurements that
    chose it), the float dtype on CUDA."""
    if weights not in ("auto", "float", "int8"):
        raise ValueError(f"unknown weights format {weights!r}; choose auto, float or int8")
    if weights == "auto":
        return "int8" if device == "cpu" and supported() else "float"
    if weights == "int8" and device != "cpu":
        raise ValueError("int8 weights run on CPU only; use weights='float' on CUDA")
    return weights  # type: ignore[return-value]
