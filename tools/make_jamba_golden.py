#!/usr/bin/env python3
"""Golden data for the Jamba hybrid (Mamba + attention + mixture-of-experts) language model.

Creates tiny randomly initialized Hugging Face JambaForCausalLM checkpoints under tests/data/jamba/ and records, in
each `golden.json`, the logits of a fixed prompt followed by its greedy continuation, computed with transformers'
pure-PyTorch path on the CPU (the sequential selective scan and torch conv1d, no mamba-ssm / causal-conv1d kernels).
All share hidden 32, vocab 128, d_state 8, d_conv 4, expand 2 (d_inner 64), dt_rank "auto" (2), feed-forward
intermediate 48, 4 query heads (head_dim 8), SiLU, RMSNorm eps 1e-6:

  tiny       4 layers; attention at layer 2 (attn_layer_period 4, offset 2), Mamba at 0, 1, 3; MoE at layers 1 and 3
             (expert_layer_period 2, offset 1) with 4 experts, top-2, dense SwiGLU feed-forward at 0 and 2; 2 key/value
             heads (grouped-query attention, 2 query heads per key/value head); conv1d bias, no in_proj / out_proj
             bias; untied head; f32
  tied       3 layers; attention at layer 0 (period 3, offset 0), Mamba at 1, 2; MoE only at layer 0 (expert period 3,
             offset 0) with 3 experts, top-1, dense feed-forward at 1 and 2; 4 key/value heads (plain multi-head);
             no conv1d bias, in_proj / out_proj biases; head tied to the embeddings; f32
  bf16       as tiny, the weights stored as bf16 (the golden is the f32 model made of the bf16-rounded weights)

Every parameter is perturbed so that a loader that ignored any of them would fail the comparison
(lm_golden.perturb): the RMSNorm weights (input_layernorm, pre_ff_layernorm, final_layernorm and the Mamba mixer's
dt_layernorm, b_layernorm, c_layernorm), D and the biases (conv1d, dt_proj, in_proj / out_proj) additively, A_log
with noise of scale 0.3, every other matrix (embeddings, projections, router, experts) multiplicatively. Then, as
transformers' init (std 0.02 everywhere) leaves the layers' contributions far below the embeddings (a tied head then
just repeats the last prompt token), the embeddings are scaled by EMB_SCALE, the matrices that read the normalized
residual stream (in_proj, q/k/v_proj, gate/up_proj, experts.gate_up_proj) by IN_SCALE, those that write into it
(out_proj, o_proj, down_proj, experts.down_proj) by OUT_SCALE and the router by ROUTER_SCALE, so that the
continuations vary and the top-k expert selection is clear of ties: golden.json's "min_router_margin" is the
smallest gap, over the MoE layers and all tokens of the full run, between the router logit of the last selected
expert and the best unselected one (asserted >= 1e-3). transformers' init leaves dt_proj at std 0.02, so that
dt = softplus(dt_proj(dt_layernorm(.)) + dt_proj.bias) barely depends on dt_layernorm: dt_proj.weight is scaled by
DT_SCALE (to about the std dt_rank^-0.5 of Mamba's own init) and dt_proj.bias and dt_layernorm get extra noise
DT_NOISE. The script asserts that putting any parameter with a non-random init (norm weights, D, biases, A_log) back
to it changes some logit of the full run by at least 1e-3. No padding token (pad_token_id None), so no embedding row
is zeroed.

The scales, the same for all three fixtures, are EMB_SCALE 4, IN_SCALE 6, OUT_SCALE 32, ROUTER_SCALE 20, DT_SCALE
30 and DT_NOISE 1.0, with seed 99 (chosen by a search over seeds and scales for all the assertions below with some
room). Larger scales make the model badly conditioned: with EMB_SCALE 10, IN_SCALE 8, OUT_SCALE 64 the f32 rounding
of transformers' own forward moved the logits by up to 9.4e-6 of their largest magnitude, too much to check a port
computing in f32 against them at 1e-5. So the script also runs the saved checkpoint in float64 (from_pretrained with
dtype float64, eager experts and eager attention; for bf16 the bf16-rounded weights) on the golden tokens with
use_cache=False, stores those logits in golden.json as "logits_f64" (9 significant digits) and their normalized
distance to the f32 golden, max|logits - logits_f64| / max|logits_f64|, as "f32_vs_f64_error", and asserts it is at
most F64_TOLERANCE = 1.5e-6 for every fixture.

The full forwards run with use_cache=False; transformers' generate() (the hybrid cache: a multi-token prefill, then
one-token steps through the conv / SSM states and the key/value cache) is checked against them. Each saved checkpoint
is reloaded into a fresh model whose logits are compared with the golden.

save_pretrained writes the experts one by one, as published Jamba checkpoints do
(model.layers.N.feed_forward.experts.E.{gate,up,down}_proj.weight, next to feed_forward.router.weight); transformers
fuses them into experts.gate_up_proj / experts.down_proj only in memory, when loading.

Besides the lm_golden record, golden.json holds "moe_layers" (the indices of the MoE layers), "router_aux_loss_coef"
(from the config), "min_router_margin" (above) and "aux_loss": transformers' load-balancing auxiliary loss
(load_balancing_loss_func) of one forward of the prompt alone with output_router_logits=True. It pools the rows of
all MoE layers: with f_e the fraction of (layer, token) rows whose top-k holds expert e (counted once per selection,
so the f_e sum to k) and P_e the mean over those rows of e's softmax probability, aux_loss = num_experts * sum_e
f_e * P_e.

Usage (needs torch, transformers, safetensors; never run in CI):
    /tmp/venv-loader/bin/python tools/make_jamba_golden.py [--only tiny,tied,bf16] [data_dir]
"""
import os

import lm_golden
import torch
from transformers import JambaConfig, JambaForCausalLM

SEED = 99
PROMPT = [1, 17, 42, 99, 3, 120, 64, 7, 31, 5]
NEW_TOKENS = 12
EMB_SCALE = 4.0
IN_SCALE = 6.0
OUT_SCALE = 32.0
ROUTER_SCALE = 20.0
DT_SCALE = 30.0
DT_NOISE = 1.0
# The largest normalized distance, max|f32 - f64| / max|f64|, allowed between the f32 golden logits and the same
# checkpoint run in float64.
F64_TOLERANCE = 1.5e-6
# The matrices reading the normalized residual stream, scaled by IN_SCALE, and those writing into it, scaled by
# OUT_SCALE.
IN_SUFFIXES = ("in_proj.weight", "q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight",
               "up_proj.weight", "experts.gate_up_proj")
OUT_SUFFIXES = ("out_proj.weight", "o_proj.weight", "down_proj.weight", "experts.down_proj")

BASE = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=48,
    num_attention_heads=4,
    hidden_act="silu",
    rms_norm_eps=1e-6,
    mamba_d_state=8,
    mamba_d_conv=4,
    mamba_expand=2,  # d_inner 64
    mamba_dt_rank="auto",  # ceil(32 / 16) = 2
    use_mamba_kernels=False,
    pad_token_id=None,
    bos_token_id=0,
    eos_token_id=0,
)

CONFIGS = {
    "tiny": dict(num_hidden_layers=4, attn_layer_period=4, attn_layer_offset=2, expert_layer_period=2,
                 expert_layer_offset=1, num_experts=4, num_experts_per_tok=2, num_key_value_heads=2,
                 tie_word_embeddings=False, mamba_conv_bias=True, mamba_proj_bias=False),
    "tied": dict(num_hidden_layers=3, attn_layer_period=3, attn_layer_offset=0, expert_layer_period=3,
                 expert_layer_offset=0, num_experts=3, num_experts_per_tok=1, num_key_value_heads=4,
                 tie_word_embeddings=True, mamba_conv_bias=False, mamba_proj_bias=True),
}
CONFIGS["bf16"] = CONFIGS["tiny"]


def perturb(model):
    lm_golden.perturb(model, bias_suffixes=("conv1d.bias", "proj.bias"), a_log_scale=0.3, out_proj_scale=1.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("embed_tokens.weight"):
                p.mul_(EMB_SCALE)
            elif name.endswith(IN_SUFFIXES):
                p.mul_(IN_SCALE)
            elif name.endswith(OUT_SUFFIXES):
                p.mul_(OUT_SCALE)
            elif name.endswith("router.weight"):
                p.mul_(ROUTER_SCALE)
            elif name.endswith("dt_proj.weight"):
                p.mul_(DT_SCALE)
        for name, p in model.named_parameters():
            if name.endswith(("dt_proj.bias", "dt_layernorm.weight")):
                p.add_(DT_NOISE * torch.randn_like(p))


def default_value(name, p):
    """What transformers' init leaves in p (which a loader that ignored it would keep), or None for a random matrix."""
    if name.endswith(("norm.weight", ".D")):
        return torch.ones_like(p)
    if name.endswith(".bias"):
        return torch.zeros_like(p)
    if name.endswith("A_log"):
        return torch.log(torch.arange(1, p.shape[1] + 1, dtype=p.dtype)).expand_as(p)
    return None


def min_ignored_effect(model, ids):
    """The smallest change of the logits of ids (max abs over them) when one parameter with a non-random init (norm
    weights, D, biases, A_log) is put back to that init: what a loader that ignored it would get wrong at least."""
    worst = (float("inf"), None)
    with torch.no_grad():
        ref = model(torch.tensor([ids]), use_cache=False).logits
        for name, p in model.named_parameters():
            value = default_value(name, p)
            if value is None:
                continue
            kept = p.clone()
            p.copy_(value)
            diff = float((model(torch.tensor([ids]), use_cache=False).logits - ref).abs().max())
            p.copy_(kept)
            worst = min(worst, (diff, name))
    return worst


def min_router_margin(model, ids):
    """The smallest gap, over the MoE layers and the tokens of ids, between the router logits of the last selected
    expert and the best unselected one: how far the top-k selection is from a tie."""
    with torch.no_grad():
        router_logits = model(torch.tensor([ids]), use_cache=False, output_router_logits=True).router_logits
    k = model.config.num_experts_per_tok
    sorted_logits = (torch.sort(r.float(), dim=-1, descending=True).values for r in router_logits)
    return min(float((s[:, k - 1] - s[:, k]).min()) for s in sorted_logits)


def f64_logits(out, ids):
    """The logits of ids from the checkpoint saved in out, run in float64 (eager experts and attention: the grouped
    matrix product and the fused attention kernels take no float64)."""
    model = JambaForCausalLM.from_pretrained(out, dtype=torch.float64, experts_implementation="eager",
                                             attn_implementation="eager").eval()
    with torch.no_grad():
        return model(torch.tensor([ids]), use_cache=False).logits[0]


def moe_layers(cfg):
    return [i for i, n in enumerate(cfg.layers_num_experts) if n > 1]


def make(data, name):
    torch.manual_seed(SEED)
    cfg = JambaConfig(**{**BASE, **CONFIGS[name]})
    model = JambaForCausalLM(cfg).eval()
    perturb(model)
    out = os.path.join(data, "jamba", name)
    if name == "bf16":
        lm_golden.save(model.to(torch.bfloat16), out)
        model = JambaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()  # the rounded weights in f32
    else:
        lm_golden.save(model, out)
    g = lm_golden.golden(model, f"tools/make_jamba_golden.py ({name})", PROMPT, NEW_TOKENS, digits=7,
                         forward_kwargs=dict(use_cache=False))
    g["generator"] += f", seed {SEED}"
    assert len(set(g["continuation"])) > 1 and g["min_top2_margin"] >= 1e-3, (g["continuation"], g["min_top2_margin"])
    with torch.no_grad():
        aux = model(torch.tensor([PROMPT]), use_cache=False, output_router_logits=True).aux_loss
    g["moe_layers"] = moe_layers(cfg)
    g["router_aux_loss_coef"] = cfg.router_aux_loss_coef
    g["aux_loss"] = float(aux)
    g["min_router_margin"] = min_router_margin(model, g["tokens"])
    assert g["min_router_margin"] >= 1e-3, g["min_router_margin"]
    ignored = min_ignored_effect(model, g["tokens"])
    assert ignored[0] >= 1e-3, ignored
    # The checkpoint as saved, in a fresh model, gives the golden logits.
    fresh = JambaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = fresh(torch.tensor([g["tokens"]]), use_cache=False).logits[0]
    diff = float((logits - torch.tensor(g["logits"])).abs().max())
    assert diff < 1e-5, diff
    # The f32 golden is well conditioned: the same checkpoint in float64 gives nearly the same logits.
    ref = f64_logits(out, g["tokens"])
    err = float((torch.tensor(g["logits"], dtype=torch.float64) - ref).abs().max() / ref.abs().max())
    assert err <= F64_TOLERANCE, err
    g["logits_f64"] = [[float("%.9g" % x) for x in row] for row in ref.tolist()]
    g["f32_vs_f64_error"] = err
    lm_golden.write_golden(out, g)
    print("  moe layers", g["moe_layers"], "aux_loss", g["aux_loss"], "min router margin", g["min_router_margin"])
    print("  smallest logit change from ignoring a parameter: %g (%s)" % ignored)
    print("  reloaded checkpoint: max abs logit diff", diff)
    print("  f32 golden vs float64: normalized error %.3g" % err)


if __name__ == "__main__":
    lm_golden.main(__doc__, {name: (lambda data, name=name: make(data, name)) for name in CONFIGS},
                   os.path.join(os.path.dirname(__file__), "..", "tests", "data"))
