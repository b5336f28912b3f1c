"""Int8 decoding (learner.quant) on the tiny Qwen2: close to float when decoding, exactly float when training,
and the routed Share delta unchanged on top of an int8 base layer."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from learner import quant, routing
from learner.runtime import GenerationParams, ModelRuntime
from learner.share.bank import ShareBank
from learner.share.layer import ShareLinear, attach_share, find_target_layers, share_layers
from learner.share.phases import phase1
from learner.tiny import build_tiny_model
from tests.helpers import random_seed

pytestmark = pytest.mark.skipif(not quant.supported(), reason="no x86/fbgemm quantized engine in this torch")


def attached(model: torch.nn.Module, tasks: int) -> ShareBank:
    seeds = [random_seed(model, f"t{i}", seed=i) for i in range(tasks)]
    result = phase1(seeds, threshold=1.0)
    bank = attach_share(model, result.bases)
    for i, s in enumerate(seeds):
        bank.set_task(s.name, result.coefficients[s.name], version=i + 1)
    return bank


def tokens(model: torch.nn.Module, batch: int, length: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, model.config.vocab_size, (batch, length), generator=g)


def test_int8_linear_decodes_close_to_float_and_trains_exactly_float() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    q = quant.Int8Linear(lin)
    x = torch.randn(5, 64)
    with torch.inference_mode():
        exact, approx = lin(x), q(x)
    assert not torch.equal(exact, approx), "the inference path must be the int8 kernel, not the float weight"
    rel = (approx - exact).norm() / exact.norm()
    assert rel < 0.02, f"int8 error {rel:.4f} is too large for per-channel weights"
    # With gradients on, the float weight runs: same output, and the input gets its gradient.
    xg = x.clone().requires_grad_(True)
    out = q(xg)
    assert torch.equal(out, lin(x))
    out.sum().backward()
    assert xg.grad is not None and torch.allclose(xg.grad, lin.weight.sum(0).expand(5, -1))


def test_each_token_meets_its_own_grid_whatever_else_the_call_holds() -> None:
    """One outlier token (Qwen's first token has activations tens of times the others) must not coarsen the
    other tokens' quantization, and a token's output must not depend on the call's other rows: a prompt-lookup
    draft, a prefill and a batch all decode like single tokens."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 80)
    q = quant.Int8Linear(lin)
    x = torch.randn(12, 96)
    x[0] *= 30
    with torch.inference_mode():
        exact, approx = lin(x), q(x)
        alone = torch.cat([q(x[i : i + 1]) for i in range(len(x))])
        reordered = q(x.flip(0)).flip(0)
    rel = (approx[1:] - exact[1:]).norm() / exact[1:].norm()
    assert rel < 0.03, f"the outlier row coarsened the others: relative error {rel:.3f}"
    assert torch.equal(approx, alone) and torch.equal(approx, reordered)


def test_the_fixed_grid_is_the_one_the_dynamic_kernel_picks_for_rows_in_unit_range() -> None:
    """``Int8Linear`` quantizes rows scaled into [−1, 1] on a fixed grid in one fbgemm call. The grid must be
    the one fbgemm's dynamic kernel derives for a call spanning exactly [−1, 1] (the earlier construction: a
    +1/−1 sentinel row appended to the scaled rows), so the two agree bit for bit — on this CPU's range (7 or
    8 bits) and on the other — including rows whose largest magnitude is positive (value exactly +1)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 80, bias=False)
    q = quant.Int8Linear(lin)
    x = torch.randn(9, 96)
    x[0] *= 30
    x[1, 5] = 50.0  # a row whose maximum is positive: scaled, that value is exactly +1
    x[2, 7] = -50.0
    scale = x.abs().amax(dim=1, keepdim=True)
    rows = x / scale
    sentinel = torch.zeros(1, 96)
    sentinel[0, 0], sentinel[0, 1] = 1.0, -1.0
    ops = torch.ops.quantized
    for reduce_range, grid in ((True, (2.0 / 127.0, 64)), (False, (2.0 / 255.0, 128))):
        with torch.inference_mode():
            dynamic = ops.linear_dynamic(torch.cat([rows, sentinel]), q._packed, reduce_range)[:-1]
            fixed = ops.linear_with_input_q_dq_qweight_dq_output_fp32(rows, *grid, q._packed)
        assert torch.equal(dynamic, fixed), f"reduce_range={reduce_range}: the fixed grid differs"
    assert quant.input_grid() == ((2.0 / 127.0, 64) if quant.reduce_range() else (2.0 / 255.0, 128))
    with torch.inference_mode():
        expected = (
            ops.linear_dynamic(torch.cat([rows, sentinel]), q._packed, quant.reduce_range())[:-1] * scale
        )
        assert torch.equal(q(x), expected)


def test_serving_only_layer_drops_the_float_weight_and_refuses_to_train() -> None:
    lin = torch.nn.Linear(32, 32)
    q = quant.Int8Linear(lin, keep_float=False)
    assert q.weight.numel() == 0 and q.weight.dtype == torch.float32
    with torch.inference_mode():
        assert q(torch.randn(2, 32)).shape == (2, 32)
    with pytest.raises(RuntimeError, match="cannot run with gradients"):
        q(torch.randn(2, 32))


def test_quantize_swaps_every_linear_and_deepcopy_keeps_the_outputs() -> None:
    model, _ = build_tiny_model(seed=3)
    linears = sum(1 for m in model.modules() if type(m) is torch.nn.Linear)
    assert quant.quantize_for_decode(model) == linears
    assert quant.weight_format(model) == "int8"
    ids = tokens(model, 2)
    clone = copy.deepcopy(model)
    with torch.inference_mode():
        assert torch.equal(model(ids).logits, clone(ids).logits)


def test_fused_siblings_give_the_unfused_outputs_bit_for_bit() -> None:
    """q/k/v and gate/up share one int8 call (``fuse_siblings``); every column is the same integer dot product,
    so logits equal the unfused model's exactly — alone, in a batch, with a Share wrapper on q/v, and in a
    deep copy, which gets its own groups."""
    fused, _ = build_tiny_model(seed=3)
    plain = copy.deepcopy(fused)
    quant.quantize_for_decode(fused)
    quant.quantize_for_decode(plain, fuse=False)
    layers = fused.config.num_hidden_layers
    groups = {
        id(m._fused) for m in fused.modules() if isinstance(m, quant.Int8Linear) and m._fused is not None
    }
    assert len(groups) == 2 * layers, "one q/k/v and one gate/up group per layer"
    attn = fused.model.layers[0].self_attn
    assert attn.q_proj._packed is None and attn.q_proj._fused is attn.k_proj._fused is attn.v_proj._fused
    unfused_attn = plain.model.layers[0].self_attn
    for name in ("q_proj", "k_proj", "v_proj"):
        assert torch.equal(
            getattr(attn, name).int8_weight().int_repr(), getattr(unfused_attn, name).int8_weight().int_repr()
        )
    ids = tokens(fused, 3)
    with torch.inference_mode():
        assert torch.equal(fused(ids).logits, plain(ids).logits)
        assert torch.equal(fused(ids[:1]).logits, plain(ids[:1]).logits)
    assert all(
        m._kept is None for m in {m._fused for m in fused.modules() if isinstance(m, quant.Int8Linear)} if m
    )
    clone = copy.deepcopy(fused)
    c_attn = clone.model.layers[0].self_attn
    assert c_attn.q_proj._fused is c_attn.v_proj._fused and c_attn.q_proj._fused is not attn.q_proj._fused
    with torch.inference_mode():
        assert torch.equal(clone(ids).logits, plain(ids).logits)
    # Share wraps q/v after quantizing: the base layers stay in their group; the routed model still matches.
    bank_f, bank_p = attached(fused, 1), attached(plain, 1)
    with torch.inference_mode():
        snap_f, snap_p = bank_f.snapshot(), bank_p.snapshot()
        with routing.routed(snap_f.rows(["t0", None, "t0"]), snap_f):
            routed_f = fused(ids).logits
        with routing.routed(snap_p.rows(["t0", None, "t0"]), snap_p):
            routed_p = plain(ids).logits
    assert torch.equal(routed_f, routed_p)


def test_a_fused_member_called_with_another_input_computes_its_own_output() -> None:
    """The group keeps its other members' outputs only for the same input tensor: a member called with a
    different one (or a member called twice) gets a fresh, correct result, never a sibling's stale one."""
    torch.manual_seed(0)
    layers = {n: torch.nn.Linear(32, w) for n, w in (("q_proj", 32), ("k_proj", 8), ("v_proj", 8))}
    holder = torch.nn.Module()
    for n, lin in layers.items():
        setattr(holder, n, quant.Int8Linear(lin))
    alone = {n: quant.Int8Linear(lin) for n, lin in layers.items()}
    assert quant.fuse_siblings(holder) == 1
    x1, x2 = torch.randn(4, 32), torch.randn(4, 32)
    with torch.no_grad():
        assert torch.equal(holder.q_proj(x1), alone["q_proj"](x1))
        assert torch.equal(holder.k_proj(x2), alone["k_proj"](x2)), "a different input must recompute"
        assert torch.equal(holder.k_proj(x2), alone["k_proj"](x2)), "a member asking twice recomputes"
        x1.mul_(2)  # in place: the version changes, so nothing kept for the old values may be served
        holder.q_proj(x1)
        x1.add_(1)
        assert torch.equal(holder.v_proj(x1), alone["v_proj"](x1))


def test_routed_share_delta_is_the_same_on_an_int8_base() -> None:
    """ShareLinear adds its float side path beside whatever its base layer computes: the delta a task adds
    over the base model is the same function of the layer input on float and int8 bases."""
    model, _ = build_tiny_model(seed=1)
    bank = attached(model, tasks=2)
    layer = next(iter(share_layers(model).values()))
    float_base = layer.base
    int8_layer = ShareLinear(quant.Int8Linear(float_base), layer.key)
    snap = bank.snapshot()
    x = torch.randn(2, 4, layer.in_features)
    with torch.inference_mode():
        with routing.routed(snap.rows(["t0", "t1"]), snap):
            routed_float, routed_int8 = layer(x), int8_layer(x)
        delta_float = routed_float - float_base(x)
        delta_int8 = routed_int8 - int8_layer.base(x)
    assert delta_float.abs().max() > 1e-3, "the planted tasks must change the output"
    torch.testing.assert_close(delta_int8, delta_float, rtol=1e-4, atol=1e-5)


def test_attach_share_after_quantizing_routes_each_row_to_its_task() -> None:
    model, _ = build_tiny_model(seed=2)
    quant.quantize_for_decode(model)
    assert find_target_layers(model, ["q_proj"]), "an Int8Linear is still an nn.Linear to Share and PEFT"
    bank = attached(model, tasks=2)
    snap = bank.snapshot()
    ids = tokens(model, 2)
    # Activations are quantized per token, so a row's logits are bit-identical alone and in a mixed batch.
    with torch.inference_mode():
        plain = model(ids[:1]).logits
        with routing.routed(snap.rows([None, "t1"]), snap):
            mixed = model(ids).logits
        with routing.routed(snap.rows(["t1"]), snap):
            task_row = model(ids[1:]).logits
    assert torch.equal(mixed[:1], plain), "a base row must stay the base model"
    assert torch.equal(mixed[1:], task_row)
    assert not torch.allclose(task_row, model(ids[1:]).logits)


def test_runtime_loads_int8_weights_and_generates(tiny_model_dir: Path) -> None:
    floats = ModelRuntime.load(str(tiny_model_dir), dtype="float32", device="cpu", weights="float")
    int8 = ModelRuntime.load(str(tiny_model_dir), dtype="float32", device="cpu", weights="auto")
    assert quant.weight_format(floats.model) == "float" and quant.weight_format(int8.model) == "int8"
    prompt = [[{"role": "user", "content": "fn main() { let x: i32 = 1; }"}]]
    params = GenerationParams(max_new_tokens=8)
    out = int8.generate(prompt, params)[0]
    assert out.completion_tokens >= 1
    # Prompt lookup verifies drafts against the same int8 model: the text equals plain int8 greedy.
    looked = int8.generate(prompt, GenerationParams(max_new_tokens=8, prompt_lookup=True))[0]
    assert looked.text == out.text


def test_weights_setting_is_validated() -> None:
    assert quant.resolve_weights("auto", "cuda") == "float"
    assert quant.resolve_weights("auto", "cpu") == "int8"
    with pytest.raises(ValueError, match="CPU only"):
        quant.resolve_weights("int8", "cuda")
    with pytest.raises(ValueError, match="unknown weights"):
        quant.resolve_weights("int4", "cpu")


def test_attach_share_on_int8_needs_no_float_copy_for_serving() -> None:
    model, _ = build_tiny_model(seed=4)
    quant.quantize_for_decode(model, keep_float=False)
    bank = attached(model, tasks=1)
    snap = bank.snapshot()
    ids = tokens(model, 1)
    with torch.inference_mode():
        plain = model(ids).logits
        with routing.routed(snap.rows(["t0"]), snap):
            routed_logits = model(ids).logits
    assert torch.isfinite(routed_logits).all() and not torch.allclose(routed_logits, plain)


def test_batched_int8_greedy_gives_the_served_lookup_text(tiny_model_dir: Path) -> None:
    """The night decodes its gate and self-data problems in batches; serving decodes one prompt at a time with
    prompt lookup. With per-token int8 both give the same replies, so the gate measures what serving runs."""
    rt = ModelRuntime.load(str(tiny_model_dir), dtype="float32", device="cpu", weights="int8")
    prompts = [
        [{"role": "user", "content": f'fn main() {{ let x = {i}; println!("{{}}", y); }}' * (1 + i % 3)}]
        for i in range(8)
    ]
    batched = rt.generate(prompts, GenerationParams(max_new_tokens=24))
    served = [rt.generate([p], GenerationParams(max_new_tokens=24, prompt_lookup=True))[0] for p in prompts]
    assert [b.text for b in batched] == [s.text for s in served]
    assert len({b.text for b in batched}) > 1, "the prompts must not all get one reply"
