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

import functools
import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

WeightFormat = Literal["float", "int8"]

_ops: Any = torch.ops.quantized

#: CPU flags whose int8 dot product accumulates u8×s8 products straight into int32 (fbgemm's VNNI kernels).
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.cache
def reduce_range() -> bool:
    """Whether activations must be quantized to 7 bits. Without VNNI, fbgemm's AVX2 kernel multiplies with
    ``vpmaddubsw``, which sums pairs of u8×s8 products into a *saturating* int16: with the full 8-bit range
    a pair can overflow it (measured on an AVX2-only EPYC: 16.6% relative error on a random 64→48 layer with
    the full range, 1.5% with 7 bits). With VNNI the full range is exact and one bit more precise."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return True
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


def _sentinel_row(width: int) -> Tensor:
    """A row with +1 and −1 (zeros elsewhere): appended to a call whose rows are scaled into [−1, 1], it makes
    [−1, 1] the call's quantization range. (A width-1 layer has room for +1 only; its rows still share [−1, 1]
    whenever any value is negative, and such layers do not occur in the models served.)"""
    row = torch.zeros(1, width)
    row[0, 0] = 1.0
    if width > 1:
        row[0, 1] = -1.0
    return row


class Int8Linear(nn.Linear):
    """A frozen linear layer that decodes with int8 weights; see the module docstring.

    Activations are quantized **per token**: fbgemm's dynamic kernel quantizes a whole call with one scale,
    so one outlier token (Qwen's first token carries activations tens of times larger than the rest) would
    set the grid for every other token of a prefill, and a row's result would depend on its batch mates and
    on how many tokens the call holds. Each row is therefore divided by its own absolute maximum, and a
    sentinel row holding +1 and −1 pins the call's range to [−1, 1]: every row meets the same grid whatever
    else is in the call, the integer matmul is exact, and the row is multiplied back by its scale. So a
    token's output is bit-identical alone, in a batch, or among a prompt-lookup draft (measured on random
    layers with one ×30 outlier row: 1.5–1.8% relative error on the other rows against 40–49% per call).

    ``keep_float=False`` drops the float weight (a serving-only copy saves 3 bytes per weight); such a layer
    can no longer train and raises if asked to run with gradients enabled.
    """

    def __init__(self, linear: nn.Linear, *, keep_float: bool = True) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        if linear.weight.device.type != "cpu":
            raise ValueError(f"int8 decoding runs on CPU; this layer lives on {linear.weight.device}")
        self._packed = _ops.linear_prepack(_quantize_weight(linear.weight), None)
        self._bias = linear.bias.detach().float().clone() if linear.bias is not None else None
        self._sentinel = _sentinel_row(self.in_features)
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
        rows = x.reshape(-1, self.in_features).float()
        scale = rows.abs().amax(dim=1, keepdim=True).clamp_min_(torch.finfo(torch.float32).tiny)
        pinned = torch.cat([rows / scale, self._sentinel])
        y = _ops.linear_dynamic(pinned, self._packed, reduce_range())[:-1].mul_(scale)
        if self._bias is not None:
            y.add_(self._bias)
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
        qweight, _ = _ops.linear_unpack(self._packed)
        clone._packed = _ops.linear_prepack(qweight.clone(), None)
        clone._bias = None if self._bias is None else self._bias.clone()
        clone._sentinel = self._sentinel
        clone.weight = nn.Parameter(self.weight.detach().clone(), requires_grad=self.weight.requires_grad)
        clone.bias = (
            None if self.bias is None else nn.Parameter(self.bias.detach().clone(), requires_grad=False)
        )
        memo[id(self)] = clone
        return clone

    def int8_bytes(self) -> int:
        return self.in_features * self.out_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8, keep_float={self.keep_float}"


def quantize_for_decode(model: nn.Module, *, keep_float: bool = True) -> int:
    """Swap every float ``nn.Linear`` of ``model`` (a layer inside a ``ShareLinear`` too) for an ``Int8Linear``,
    in place; returns how many were swapped.

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
    return swapped


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
