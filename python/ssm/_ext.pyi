"""
ssm._ext: nanobind bindings of the ssm C++ library. Array arguments are taken without copies through DLPack or the buffer protocol; arrays the library allocates are returned as DLPack capsules that own their memory. The package `ssm` wraps these functions.
"""

from collections.abc import Mapping, Sequence
from typing import Annotated, overload

from numpy.typing import NDArray

from ssm.layers import (
    _gla as gla,
    _katharopoulos as katharopoulos,
    _retnet as retnet,
    forward as forward
)
from ssm.train import (
    _from_pretrained as from_pretrained,
    _logits as logits,
    _parameters as parameters
)


class Error(ValueError):
    """
    Bad input to the ssm library (shape, dtype, device, layout, option, file): the message names the operation, the argument, what was expected and what came.
    """

def to_numpy(capsule: object) -> object:
    """
    A writable numpy.ndarray over the memory of a DLPack capsule returned by this module, without a copy; the capsule is consumed.
    """

def backends() -> dict:
    """
    The backends of this build: {'cpu', 'simd' ('avx512', 'avx2' or 'generic', fixed when the extension was compiled), 'cuda_linked', 'cuda_name', 'cuda_usable', 'cuda_status'}.
    """

def selective_scan(u: Annotated[NDArray, dict(writable=False)], delta: Annotated[NDArray, dict(writable=False)], A: Annotated[NDArray, dict(writable=False)], B: Annotated[NDArray, dict(writable=False)], C: Annotated[NDArray, dict(writable=False)], *, D: Annotated[NDArray, dict(writable=False)] | None = None, z: Annotated[NDArray, dict(writable=False)] | None = None, delta_bias: Annotated[NDArray, dict(writable=False)] | None = None, delta_softplus: bool = False, initial_state: Annotated[NDArray, dict(writable=False)] | None = None, cu_seqlens: Annotated[NDArray, dict(writable=False)] | None = None, return_last_state: bool = False, save_chunk_states: bool = False, path: str = 'automatic', num_threads: int = 0, chunk_len: int = 0) -> tuple:
    """
    Selective scan (Mamba's S6). u, delta (b, d, l); A (d, n); B, C (b, g, n, l), (b, n, l) or (d, n). Returns (out, last_state, chunk_states, path): capsules (None when not asked for) and the path that ran.
    """

def selective_scan_backward(u: Annotated[NDArray, dict(writable=False)], delta: Annotated[NDArray, dict(writable=False)], A: Annotated[NDArray, dict(writable=False)], B: Annotated[NDArray, dict(writable=False)], C: Annotated[NDArray, dict(writable=False)], grad_out: Annotated[NDArray, dict(writable=False)], *, D: Annotated[NDArray, dict(writable=False)] | None = None, z: Annotated[NDArray, dict(writable=False)] | None = None, delta_bias: Annotated[NDArray, dict(writable=False)] | None = None, delta_softplus: bool = False, initial_state: Annotated[NDArray, dict(writable=False)] | None = None, cu_seqlens: Annotated[NDArray, dict(writable=False)] | None = None, grad_last_state: Annotated[NDArray, dict(writable=False)] | None = None, chunk_states: Annotated[NDArray, dict(writable=False)] | None = None, path: str = 'automatic', num_threads: int = 0, chunk_len: int = 0) -> tuple:
    """
    Gradients of selective_scan for grad_out (b, d, l). Returns (grad_u, grad_delta, grad_A, grad_B, grad_C, grad_D, grad_z, grad_delta_bias, grad_initial_state, path); a gradient is None when its input was absent.
    """

def ssd(x: Annotated[NDArray, dict(writable=False)], dt: Annotated[NDArray, dict(writable=False)], A: Annotated[NDArray, dict(writable=False)], B: Annotated[NDArray, dict(writable=False)], C: Annotated[NDArray, dict(writable=False)], *, D: Annotated[NDArray, dict(writable=False)] | None = None, z: Annotated[NDArray, dict(writable=False)] | None = None, dt_bias: Annotated[NDArray, dict(writable=False)] | None = None, dt_softplus: bool = False, dt_limit: tuple[float, float] | None = None, initial_state: Annotated[NDArray, dict(writable=False)] | None = None, cu_seqlens: Annotated[NDArray, dict(writable=False)] | None = None, return_final_state: bool = False, save_for_backward: bool = False, chunk_size: int = 256, head_dim: int = 0, path: str = 'automatic', threads: int = 0) -> tuple:
    """
    SSD, Mamba-2's scan. x (b, l, h, p); dt (b, l, h); A (h); B, C (b, l, g, n). Returns (out, final_state, path, saved): saved, with save_for_backward (CPU chunked path, or CUDA), is (chunk_states, y, chunk_size) for ssd_backward's saved_states, saved_y and saved_chunk_size, else None.
    """

def ssd_backward(x: Annotated[NDArray, dict(writable=False)], dt: Annotated[NDArray, dict(writable=False)], A: Annotated[NDArray, dict(writable=False)], B: Annotated[NDArray, dict(writable=False)], C: Annotated[NDArray, dict(writable=False)], grad_out: Annotated[NDArray, dict(writable=False)], *, D: Annotated[NDArray, dict(writable=False)] | None = None, z: Annotated[NDArray, dict(writable=False)] | None = None, dt_bias: Annotated[NDArray, dict(writable=False)] | None = None, dt_softplus: bool = False, dt_limit: tuple[float, float] | None = None, initial_state: Annotated[NDArray, dict(writable=False)] | None = None, cu_seqlens: Annotated[NDArray, dict(writable=False)] | None = None, grad_final_state: Annotated[NDArray, dict(writable=False)] | None = None, saved_states: Annotated[NDArray, dict(writable=False)] | None = None, saved_y: Annotated[NDArray, dict(writable=False)] | None = None, saved_chunk_size: int = 0, chunk_size: int = 256, head_dim: int = 0, path: str = 'automatic', threads: int = 0) -> tuple:
    """
    Gradients of ssd for grad_out (x's shape); with saved_states (and saved_y with z) from ssd's saved, the chunked path reads them instead of recomputing. Returns (grad_x, grad_dt, grad_A, grad_B, grad_C, grad_D, grad_z, grad_dt_bias, grad_initial_state, path).
    """

def linear_attention(q: Annotated[NDArray, dict(writable=False)], k: Annotated[NDArray, dict(writable=False)], v: Annotated[NDArray, dict(writable=False)], *, log_gate: Annotated[NDArray, dict(writable=False)] | None = None, initial_state: Annotated[NDArray, dict(writable=False)] | None = None, initial_normalizer: Annotated[NDArray, dict(writable=False)] | None = None, cu_seqlens: Annotated[NDArray, dict(writable=False)] | None = None, feature_map: str = 'identity', normalize: bool = False, eps: float = 1e-06, scale: float = 1.0, gamma: Sequence[float] | None = None, return_final_state: bool = False, chunk_size: int = 64, path: str = 'automatic', threads: int = 0) -> tuple:
    """
    Linear attention / retention / GLA. q, k (b, l, g, dk); v (b, l, h, dv); log_gate (b, l, h, dk) <= 0. Returns (out, final_state, final_normalizer, path).
    """

def linear_attention_backward(q: Annotated[NDArray, dict(writable=False)], k: Annotated[NDArray, dict(writable=False)], v: Annotated[NDArray, dict(writable=False)], grad_out: Annotated[NDArray, dict(writable=False)], *, log_gate: Annotated[NDArray, dict(writable=False)] | None = None, initial_state: Annotated[NDArray, dict(writable=False)] | None = None, initial_normalizer: Annotated[NDArray, dict(writable=False)] | None = None, cu_seqlens: Annotated[NDArray, dict(writable=False)] | None = None, grad_final_state: Annotated[NDArray, dict(writable=False)] | None = None, grad_final_normalizer: Annotated[NDArray, dict(writable=False)] | None = None, feature_map: str = 'identity', normalize: bool = False, eps: float = 1e-06, scale: float = 1.0, gamma: Sequence[float] | None = None, chunk_size: int = 64, path: str = 'automatic', threads: int = 0) -> tuple:
    """
    Gradients of linear_attention for grad_out (v's shape). Returns (grad_q, grad_k, grad_v, grad_initial_state, grad_initial_normalizer, grad_log_gate, path).
    """

def delta_rule(q: Annotated[NDArray, dict(writable=False)], k: Annotated[NDArray, dict(writable=False)], v: Annotated[NDArray, dict(writable=False)], beta: Annotated[NDArray, dict(writable=False)], *, g: Annotated[NDArray, dict(writable=False)] | None = None, initial_state: Annotated[NDArray, dict(writable=False)] | None = None, cu_seqlens: Annotated[NDArray, dict(writable=False)] | None = None, l2_normalize: bool = True, norm_eps: float = 1e-06, scale: float = 1.0, return_final_state: bool = False, chunk_size: int = 64, path: str = 'automatic', threads: int = 0) -> tuple:
    """
    The delta rule (DeltaNet; with g, Gated DeltaNet). q, k (b, l, g, dk); v (b, l, h, dv); beta, g (b, l, h). Returns (out, final_state, path).
    """

def delta_rule_backward(q: Annotated[NDArray, dict(writable=False)], k: Annotated[NDArray, dict(writable=False)], v: Annotated[NDArray, dict(writable=False)], beta: Annotated[NDArray, dict(writable=False)], grad_out: Annotated[NDArray, dict(writable=False)], *, g: Annotated[NDArray, dict(writable=False)] | None = None, initial_state: Annotated[NDArray, dict(writable=False)] | None = None, cu_seqlens: Annotated[NDArray, dict(writable=False)] | None = None, grad_final_state: Annotated[NDArray, dict(writable=False)] | None = None, l2_normalize: bool = True, norm_eps: float = 1e-06, scale: float = 1.0, chunk_size: int = 64, path: str = 'automatic', threads: int = 0) -> tuple:
    """
    Gradients of delta_rule for grad_out (v's shape). Returns (grad_q, grad_k, grad_v, grad_beta, grad_g, grad_initial_state, path).
    """

def hyena(v: Annotated[NDArray, dict(writable=False)], x: Sequence[Annotated[NDArray, dict(writable=False)]], h: Annotated[NDArray, dict(writable=False)], bias: Annotated[NDArray, dict(writable=False)], *, path: str = 'automatic', threads: int = 0) -> tuple:
    """
    Hyena's gated long convolutions of order N = len(x). v and each gate (b, l, d); h (N - 1, d, L >= l); bias (N - 1, d). Returns (out, path).
    """

def hyena_backward(v: Annotated[NDArray, dict(writable=False)], x: Sequence[Annotated[NDArray, dict(writable=False)]], h: Annotated[NDArray, dict(writable=False)], bias: Annotated[NDArray, dict(writable=False)], grad_out: Annotated[NDArray, dict(writable=False)], *, path: str = 'automatic', threads: int = 0) -> tuple:
    """
    Gradients of hyena. Returns (grad_v, grad_x (N, b, l, d), grad_h, grad_bias, path).
    """

def moe(x: Annotated[NDArray, dict(writable=False)], router: Annotated[NDArray, dict(writable=False)], w_gate_up: Annotated[NDArray, dict(writable=False)], w_down: Annotated[NDArray, dict(writable=False)], *, top_k: int = 2, normalize_topk: bool = False, activation: str = 'silu', path: str = 'automatic', threads: int = 0) -> tuple:
    """
    Sparse mixture of SwiGLU experts. x (t, H); router (E, H); w_gate_up (E, 2I, H), gate rows first; w_down (E, H, I). Returns (out, router_logits, path).
    """

def moe_backward(x: Annotated[NDArray, dict(writable=False)], router: Annotated[NDArray, dict(writable=False)], w_gate_up: Annotated[NDArray, dict(writable=False)], w_down: Annotated[NDArray, dict(writable=False)], grad_out: Annotated[NDArray, dict(writable=False)], *, grad_router_logits: Annotated[NDArray, dict(writable=False)] | None = None, top_k: int = 2, normalize_topk: bool = False, activation: str = 'silu', path: str = 'automatic', threads: int = 0) -> tuple:
    """
    Gradients of moe for grad_out (t, H) and an optional grad_router_logits (t, E); weights in x's dtype. Returns (grad_x, grad_router, grad_w_gate_up, grad_w_down, path).
    """

def moe_load_balancing_loss(router_logits: Sequence[Annotated[NDArray, dict(writable=False)]], top_k: int, *, mask: Annotated[NDArray, dict(writable=False)] | None = None, with_grad: bool = False) -> tuple:
    """
    The load-balancing loss over a list of (t, E) router logits (one per MoE layer), mask (t) optional. Returns (loss, grad (layers * t, E) or None).
    """

def rwkv4(k: Annotated[NDArray, dict(writable=False)], v: Annotated[NDArray, dict(writable=False)], time_decay: Annotated[NDArray, dict(writable=False)], time_first: Annotated[NDArray, dict(writable=False)], *, initial_state: Annotated[NDArray, dict(writable=False)] | None = None, cu_seqlens: Annotated[NDArray, dict(writable=False)] | None = None, return_final_state: bool = False, checkpoint: int = 64, path: str = 'automatic', threads: int = 0) -> tuple:
    """
    RWKV-4's WKV recurrence. k, v (b, l, c); time_decay, time_first (c); initial_state (b, 3, c): num, den, max. Returns (out, final_state, path).
    """

def rwkv4_backward(k: Annotated[NDArray, dict(writable=False)], v: Annotated[NDArray, dict(writable=False)], time_decay: Annotated[NDArray, dict(writable=False)], time_first: Annotated[NDArray, dict(writable=False)], grad_out: Annotated[NDArray, dict(writable=False)], *, initial_state: Annotated[NDArray, dict(writable=False)] | None = None, cu_seqlens: Annotated[NDArray, dict(writable=False)] | None = None, grad_final_state: Annotated[NDArray, dict(writable=False)] | None = None, checkpoint: int = 64, path: str = 'automatic', threads: int = 0) -> tuple:
    """
    Gradients of rwkv4 for grad_out (k's shape). Returns (grad_k, grad_v, grad_time_decay, grad_time_first, grad_initial_state, path).
    """

def rwkv7(q: Annotated[NDArray, dict(writable=False)], k: Annotated[NDArray, dict(writable=False)], v: Annotated[NDArray, dict(writable=False)], log_w: Annotated[NDArray, dict(writable=False)], a: Annotated[NDArray, dict(writable=False)], b: Annotated[NDArray, dict(writable=False)], *, initial_state: Annotated[NDArray, dict(writable=False)] | None = None, cu_seqlens: Annotated[NDArray, dict(writable=False)] | None = None, scale: float = 1.0, return_final_state: bool = False, chunk_size: int = 32, path: str = 'automatic', threads: int = 0) -> tuple:
    """
    RWKV-7's generalized delta rule. q, k, log_w, a, b (b, l, h, dk); v (b, l, h, dv). Returns (out, final_state, path).
    """

def rwkv7_backward(q: Annotated[NDArray, dict(writable=False)], k: Annotated[NDArray, dict(writable=False)], v: Annotated[NDArray, dict(writable=False)], log_w: Annotated[NDArray, dict(writable=False)], a: Annotated[NDArray, dict(writable=False)], b: Annotated[NDArray, dict(writable=False)], grad_out: Annotated[NDArray, dict(writable=False)], *, initial_state: Annotated[NDArray, dict(writable=False)] | None = None, cu_seqlens: Annotated[NDArray, dict(writable=False)] | None = None, grad_final_state: Annotated[NDArray, dict(writable=False)] | None = None, scale: float = 1.0, chunk_size: int = 32, path: str = 'automatic', threads: int = 0) -> tuple:
    """
    Gradients of rwkv7 for grad_out (v's shape). Returns (grad_q, grad_k, grad_v, grad_log_w, grad_a, grad_b, grad_initial_state, path).
    """

def ttt_linear(q: Annotated[NDArray, dict(writable=False)], k: Annotated[NDArray, dict(writable=False)], v: Annotated[NDArray, dict(writable=False)], eta: Annotated[NDArray, dict(writable=False)], ln_weight: Annotated[NDArray, dict(writable=False)], ln_bias: Annotated[NDArray, dict(writable=False)], *, position_weights: Annotated[NDArray, dict(writable=False)] | None = None, initial_state: Annotated[NDArray, dict(writable=False)] | None = None, initial_pending: Annotated[NDArray, dict(writable=False)] | None = None, cu_seqlens: Annotated[NDArray, dict(writable=False)] | None = None, mini_batch_size: int = 16, start: int = 0, ln_eps: float = 1e-06, return_final_state: bool = False, path: str = 'automatic', threads: int = 0) -> tuple:
    """
    TTT-Linear. q, k, v (b, l, h, d); eta (b, l, h); ln_weight, ln_bias (h, d). Returns (out, final_state, final_pending, path).
    """

def ttt_linear_backward(q: Annotated[NDArray, dict(writable=False)], k: Annotated[NDArray, dict(writable=False)], v: Annotated[NDArray, dict(writable=False)], eta: Annotated[NDArray, dict(writable=False)], ln_weight: Annotated[NDArray, dict(writable=False)], ln_bias: Annotated[NDArray, dict(writable=False)], grad_out: Annotated[NDArray, dict(writable=False)], *, position_weights: Annotated[NDArray, dict(writable=False)] | None = None, initial_state: Annotated[NDArray, dict(writable=False)] | None = None, initial_pending: Annotated[NDArray, dict(writable=False)] | None = None, cu_seqlens: Annotated[NDArray, dict(writable=False)] | None = None, grad_final_state: Annotated[NDArray, dict(writable=False)] | None = None, grad_final_pending: Annotated[NDArray, dict(writable=False)] | None = None, mini_batch_size: int = 16, start: int = 0, ln_eps: float = 1e-06, path: str = 'automatic', threads: int = 0) -> tuple:
    """
    Gradients of ttt_linear for grad_out (v's shape). Returns (grad_q, grad_k, grad_v, grad_eta, grad_ln_weight, grad_ln_bias, grad_position_weights, grad_initial_state, grad_initial_pending, path).
    """

def causal_conv1d(x: Annotated[NDArray, dict(writable=False)], weight: Annotated[NDArray, dict(writable=False)], *, bias: Annotated[NDArray, dict(writable=False)] | None = None, initial_state: Annotated[NDArray, dict(writable=False)] | None = None, silu: bool = True) -> tuple:
    """
    Causal depthwise conv1d. x (b, d, l); weight (d, w); bias (d); initial_state (b, d, w - 1). Returns (out, final_state, path).
    """

def causal_conv1d_backward(x: Annotated[NDArray, dict(writable=False)], weight: Annotated[NDArray, dict(writable=False)], grad_out: Annotated[NDArray, dict(writable=False)], *, bias: Annotated[NDArray, dict(writable=False)] | None = None, initial_state: Annotated[NDArray, dict(writable=False)] | None = None, grad_final_state: Annotated[NDArray, dict(writable=False)] | None = None, silu: bool = True) -> tuple:
    """
    Gradients of causal_conv1d. Returns (grad_x, grad_weight, grad_bias, grad_initial_state).
    """

def attention(q: Annotated[NDArray, dict(writable=False)], k: Annotated[NDArray, dict(writable=False)], v: Annotated[NDArray, dict(writable=False)], *, causal: bool = True, scale: float = 0.0, algorithm: str = 'tiled', n_threads: int = 0) -> tuple:
    """
    Scaled dot-product attention. q (b, l_q, h, p); k, v (b, l_k, h_kv, p). Returns (out, lse).
    """

def attention_backward(q: Annotated[NDArray, dict(writable=False)], k: Annotated[NDArray, dict(writable=False)], v: Annotated[NDArray, dict(writable=False)], out: Annotated[NDArray, dict(writable=False)], lse: Annotated[NDArray, dict(writable=False)], grad_out: Annotated[NDArray, dict(writable=False)], *, causal: bool = True, scale: float = 0.0, algorithm: str = 'tiled', n_threads: int = 0) -> tuple:
    """Gradients of attention. Returns (grad_q, grad_k, grad_v)."""

def rms_norm(x: Annotated[NDArray, dict(writable=False)], weight: Annotated[NDArray, dict(writable=False)] | None = None, *, eps: float = 1e-05, path: str = 'automatic') -> object:
    """
    RMSNorm over the last dimension. x (rows, dim); weight (dim). Returns y.
    """

def linear(x: Annotated[NDArray, dict(writable=False)], weight: Annotated[NDArray, dict(writable=False)], bias: Annotated[NDArray, dict(writable=False)] | None = None, *, path: str = 'automatic', num_threads: int = 1) -> object:
    """
    y = x weight^T + bias. x (rows, in); weight (out, in); bias (out). Returns y.
    """

def long_conv(x: Annotated[NDArray, dict(writable=False)], K: Annotated[NDArray, dict(writable=False)], D: Annotated[NDArray, dict(writable=False)] | None = None, *, gate_in: Annotated[NDArray, dict(writable=False)] | None = None, gate_out: Annotated[NDArray, dict(writable=False)] | None = None, activation: str = 'none', path: str = 'automatic', threads: int = 0) -> tuple:
    """
    y = gate_out * act(K * u + D u), u = gate_in * x, a causal convolution per channel. x, gates (b, l, h); K (h, L >= l); D (h). Returns (y, path).
    """

def glu(z: Annotated[NDArray, dict(writable=False)], *, path: str = 'automatic') -> object:
    """y = z[:, :h] * sigmoid(z[:, h:]). z (rows, 2h). Returns y (rows, h)."""

class MambaBlock:
    """
    Mamba's mixer: in_proj, causal conv + SiLU, the selective scan, gate, out_proj (Gu & Dao 2023), mamba_ssm's initialization.
    """

    def __init__(self, d_model: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank: int = 0, bias: bool = False, conv_bias: bool = True, gated: bool = True, selective: bool = True, seed: int = 0) -> None:
        """
        dt_rank 0: ceil(d_model / 16). gated False: no silu(z) gate; selective False: a time-invariant S4D-Real SSM (the Mamba paper's Table 1 ablations).
        """

    def forward_capsule(self, x: Annotated[NDArray, dict(writable=False)], state: MambaState | None = None) -> object:
        """
        x (b, l, d_model) float32 contiguous -> (b, l, d_model) capsule. With a state: continues from it and leaves it after the last token.
        """

    def init_state(self, b: int) -> MambaState:
        """A zero state for b sequences."""

    @property
    def d_model(self) -> int: ...

class MambaState:
    """
    The recurrent state of a layer for b sequences (from the layer's init_state).
    """

    @property
    def b(self) -> int:
        """The number of sequences."""

class Mamba2Block:
    """
    Mamba-2's mixer: in_proj to [z, xBC, dt], causal conv + SiLU, SSD, gated RMSNorm, out_proj (Dao & Gu 2024), mamba_ssm's initialization.
    """

    def __init__(self, d_model: int, *, d_state: int = 128, d_conv: int = 4, expand: int = 2, head_dim: int = 64, n_groups: int = 1, chunk_size: int = 256, bias: bool = False, conv_bias: bool = True, norm_eps: float = 1e-05, seed: int = 0) -> None:
        """head_dim must divide expand * d_model, n_groups the heads."""

    def forward_capsule(self, x: Annotated[NDArray, dict(writable=False)], state: Mamba2State | None = None) -> object:
        """
        x (b, l, d_model) float32 contiguous -> (b, l, d_model) capsule. With a state: continues from it and leaves it after the last token.
        """

    def init_state(self, b: int) -> Mamba2State:
        """A zero state for b sequences."""

    @property
    def d_model(self) -> int: ...

class Mamba2State:
    """
    The recurrent state of a layer for b sequences (from the layer's init_state).
    """

    @property
    def b(self) -> int:
        """The number of sequences."""

class DeltaNet:
    """
    DeltaNet / Gated DeltaNet (Yang et al. 2024): q, k, v through a short conv + SiLU, the delta rule, per-head RMSNorm with a SiLU gate.
    """

    def __init__(self, d_model: int, *, heads: int = 4, head_dim: int = 0, head_v_dim: int = 0, d_conv: int = 4, gated: bool = False, norm_eps: float = 1e-05, chunk_size: int = 64, seed: int = 0) -> None:
        """
        head_dim 0: d_model / heads; head_v_dim 0: head_dim; gated: Gated DeltaNet's decay per head and step.
        """

    def forward_capsule(self, x: Annotated[NDArray, dict(writable=False)], state: DeltaNetState | None = None) -> object:
        """
        x (b, l, d_model) float32 contiguous -> (b, l, d_model) capsule. With a state: continues from it and leaves it after the last token.
        """

    def init_state(self, b: int) -> DeltaNetState:
        """A zero state for b sequences."""

    @property
    def d_model(self) -> int: ...

class DeltaNetState:
    """
    The recurrent state of a layer for b sequences (from the layer's init_state).
    """

    @property
    def b(self) -> int:
        """The number of sequences."""

class LinearAttention:
    """
    Multi-head linear attention (Katharopoulos et al. 2020) and RetNet's retention (Sun et al. 2023): in_proj to q, k, v (and a gate), the linear-attention op with a feature map, decay and normalizer, out_proj.
    """

    def __init__(self, d_model: int, *, heads: int = 4, head_dim: int = 0, head_v_dim: int = 0, feature_map: str = 'identity', normalize: bool = False, retention: bool = False, output_norm: bool = False, output_gate: bool = False, gated: bool = False, gate_rank: int = 16, gate_normalizer: float = 16.0, norm_eps: float = 1e-05, chunk_size: int = 64, seed: int = 0) -> None:
        """
        RetNet: retention, output_norm and output_gate with head_v_dim = 2 d_model / heads (LinearAttention.retnet). Katharopoulos: feature_map 'elu_plus_one' with normalize (LinearAttention.katharopoulos). GLA: gated (the low-rank log gate logsigmoid(.) / gate_normalizer per key channel), head_dim = d_model / (2 heads), head_v_dim = d_model / heads, output_norm and output_gate (LinearAttention.gla).
        """

    def forward_capsule(self, x: Annotated[NDArray, dict(writable=False)], state: LinearAttentionState | None = None) -> object:
        """
        x (b, l, d_model) float32 contiguous -> (b, l, d_model) capsule. With a state: continues from it and leaves it after the last token.
        """

    def init_state(self, b: int) -> LinearAttentionState:
        """A zero state for b sequences."""

    @property
    def d_model(self) -> int: ...

class LinearAttentionState:
    """
    The recurrent state of a layer for b sequences (from the layer's init_state).
    """

    @property
    def b(self) -> int:
        """The number of sequences."""

class Rwkv4:
    """
    One of RWKV-4's two sublayers (Peng et al. 2023): time mixing (token shift, k / v / r projections, the WKV recurrence, σ(r) ⊙ wkv, output) or channel mixing (token shift, σ(W_r x_r) ⊙ W_v relu(W_k x_k)²).
    """

    def __init__(self, d_model: int, *, kind: str = 'time_mix', d_att: int = 0, d_ffn: int = 0, seed: int = 0) -> None:
        """
        kind 'time_mix' or 'channel_mix'; d_att (time mixing) 0: d_model; d_ffn (channel mixing) 0: 4 d_model; a plain initialization for experiments, not RWKV-4's tuned one.
        """

    def forward_capsule(self, x: Annotated[NDArray, dict(writable=False)], state: Rwkv4State | None = None) -> object:
        """
        x (b, l, d_model) float32 contiguous -> (b, l, d_model) capsule. With a state: continues from it and leaves it after the last token.
        """

    def init_state(self, b: int) -> Rwkv4State:
        """A zero state for b sequences."""

    @property
    def d_model(self) -> int: ...

class Rwkv4State:
    """
    The recurrent state of a layer for b sequences (from the layer's init_state).
    """

    @property
    def b(self) -> int:
        """The number of sequences."""

class Rwkv7:
    """
    RWKV-7's time mixing (Peng et al. 2025) as a first layer (no value residual): token shift, the decay / in-context-rate / gate LoRAs, the generalized delta rule, GroupNorm, the bonus and the output gate.
    """

    def __init__(self, d_model: int, *, head_dim: int = 64, decay_rank: int = 64, a_rank: int = 64, gate_rank: int = 128, norm_eps: float = 0.00064, seed: int = 0) -> None:
        """
        heads = d_model / head_dim; a plain initialization for experiments, not RWKV-7's tuned one.
        """

    def forward_capsule(self, x: Annotated[NDArray, dict(writable=False)], state: Rwkv7State | None = None) -> object:
        """
        x (b, l, d_model) float32 contiguous -> (b, l, d_model) capsule. With a state: continues from it and leaves it after the last token.
        """

    def init_state(self, b: int) -> Rwkv7State:
        """A zero state for b sequences."""

    @property
    def d_model(self) -> int: ...

class Rwkv7State:
    """
    The recurrent state of a layer for b sequences (from the layer's init_state).
    """

    @property
    def b(self) -> int:
        """The number of sequences."""

class TTTLinear:
    """
    TTT-Linear (Sun et al. 2024), the authors' TTTLinear: q, k, v projections, RoPE at positions mod the mini-batch, the inner linear model trained by mini-batch gradient descent with a learnable token-dependent learning rate, post LayerNorm, optional gelu gate, out_proj.
    """

    def __init__(self, d_model: int, *, heads: int = 4, mini_batch_size: int = 16, base_lr: float = 1.0, rope_base: float = 10000.0, use_gate: bool = False, ln_eps: float = 1e-06, seed: int = 0) -> None:
        """
        head width d_model / heads (even); the authors' initialization (std 0.02).
        """

    def forward_capsule(self, x: Annotated[NDArray, dict(writable=False)], state: TTTLinearState | None = None) -> object:
        """
        x (b, l, d_model) float32 contiguous -> (b, l, d_model) capsule. With a state: continues from it and leaves it after the last token.
        """

    def init_state(self, b: int) -> TTTLinearState:
        """A zero state for b sequences."""

    @property
    def d_model(self) -> int: ...

class TTTLinearState:
    """
    The recurrent state of a layer for b sequences (from the layer's init_state).
    """

    @property
    def b(self) -> int:
        """The number of sequences."""

class MultiHeadAttention:
    """
    Causal multi-head / grouped-query softmax attention (Vaswani et al. 2017): q, k, v projections, optional rotary embedding, the attention op, out_proj; its state is a KV cache that grows with the context.
    """

    def __init__(self, d_model: int, *, n_heads: int = 12, n_kv_heads: int = 0, head_dim: int = 0, rotary: bool = False, rotary_base: float = 10000.0, seed: int = 0) -> None:
        """
        n_kv_heads 0: n_heads (multi-head); fewer, dividing n_heads: grouped-query. head_dim 0: d_model / n_heads.
        """

    def forward_capsule(self, x: Annotated[NDArray, dict(writable=False)], state: AttentionState | None = None) -> object:
        """
        x (b, l, d_model) float32 contiguous -> (b, l, d_model) capsule. With a state: continues from it and leaves it after the last token.
        """

    def init_state(self, b: int) -> AttentionState:
        """A zero state for b sequences."""

    @property
    def d_model(self) -> int: ...

class AttentionState:
    """
    The recurrent state of a layer for b sequences (from the layer's init_state).
    """

    @property
    def b(self) -> int:
        """The number of sequences."""

class MambaLM:
    """
    A causal language model over the library's blocks, on the CPU (f32 compute).
    """

    @staticmethod
    def load(dir: str, weight_dtype: str | None = None) -> MambaLM:
        """
        Loads a checkpoint directory (config.json and model.safetensors, or sharded safetensors). weight_dtype 'f32', 'f16' or 'bf16' converts the large matrices; None keeps the checkpoint's dtype.
        """

    @staticmethod
    def init(config_json: str, seed: int = 0) -> MambaLM:
        """
        A randomly initialized model of the config (config.json's text, as load reads it), from seed.
        """

    def save(self, dir: str) -> None:
        """
        Writes config.json and model.safetensors (f32) into dir, which load reads back.
        """

    def logits_capsule(self, ids: Annotated[NDArray, dict(writable=False)]) -> object:
        """
        Logits for every position: ids (b, l) int32 or int64 -> (b, l, padded_vocab) float32 capsule.
        """

    def generate(self, prompt: Sequence[int], max_new_tokens: int, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop_ids: Sequence[int] | None = None, prefill_chunk: int = 0) -> list[int]:
        """
        Continues one prompt (token ids); returns the new tokens only. temperature 0 is greedy; stop_ids None stops at the config's end-of-sequence ids, [] never stops early.
        """

    def set_threads(self, n: int) -> None:
        """CPU threads for the forward (0: automatic)."""

    @property
    def threads(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def padded_vocab(self) -> int: ...

    @property
    def d_model(self) -> int: ...

    @property
    def n_layer(self) -> int: ...

    @property
    def weight_bytes(self) -> int: ...

class Mamba2LM:
    """
    A causal language model over the library's blocks, on the CPU (f32 compute).
    """

    @staticmethod
    def load(dir: str, weight_dtype: str | None = None) -> Mamba2LM:
        """
        Loads a checkpoint directory (config.json and model.safetensors, or sharded safetensors). weight_dtype 'f32', 'f16' or 'bf16' converts the large matrices; None keeps the checkpoint's dtype.
        """

    @staticmethod
    def init(config_json: str, seed: int = 0) -> Mamba2LM:
        """
        A randomly initialized model of the config (config.json's text, as load reads it), from seed.
        """

    def save(self, dir: str) -> None:
        """
        Writes config.json and model.safetensors (f32) into dir, which load reads back.
        """

    def logits_capsule(self, ids: Annotated[NDArray, dict(writable=False)]) -> object:
        """
        Logits for every position: ids (b, l) int32 or int64 -> (b, l, padded_vocab) float32 capsule.
        """

    def generate(self, prompt: Sequence[int], max_new_tokens: int, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop_ids: Sequence[int] | None = None, prefill_chunk: int = 0) -> list[int]:
        """
        Continues one prompt (token ids); returns the new tokens only. temperature 0 is greedy; stop_ids None stops at the config's end-of-sequence ids, [] never stops early.
        """

    def set_threads(self, n: int) -> None:
        """CPU threads for the forward (0: automatic)."""

    @property
    def threads(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def padded_vocab(self) -> int: ...

    @property
    def d_model(self) -> int: ...

    @property
    def n_layer(self) -> int: ...

    @property
    def weight_bytes(self) -> int: ...

class RwkvLM:
    """
    A causal language model over the library's blocks, on the CPU (f32 compute).
    """

    @staticmethod
    def load(dir: str, weight_dtype: str | None = None) -> RwkvLM:
        """
        Loads a checkpoint directory (config.json and model.safetensors, or sharded safetensors). weight_dtype 'f32', 'f16' or 'bf16' converts the large matrices; None keeps the checkpoint's dtype.
        """

    @staticmethod
    def init(config_json: str, seed: int = 0) -> RwkvLM:
        """
        A randomly initialized model of the config (config.json's text, as load reads it), from seed.
        """

    def save(self, dir: str) -> None:
        """
        Writes config.json and model.safetensors (f32) into dir, which load reads back.
        """

    def logits_capsule(self, ids: Annotated[NDArray, dict(writable=False)]) -> object:
        """
        Logits for every position: ids (b, l) int32 or int64 -> (b, l, padded_vocab) float32 capsule.
        """

    def generate(self, prompt: Sequence[int], max_new_tokens: int, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop_ids: Sequence[int] | None = None, prefill_chunk: int = 0) -> list[int]:
        """
        Continues one prompt (token ids); returns the new tokens only. temperature 0 is greedy; stop_ids None stops at the config's end-of-sequence ids, [] never stops early.
        """

    def set_threads(self, n: int) -> None:
        """CPU threads for the forward (0: automatic)."""

    @property
    def threads(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def padded_vocab(self) -> int: ...

    @property
    def d_model(self) -> int: ...

    @property
    def n_layer(self) -> int: ...

    @property
    def weight_bytes(self) -> int: ...

class JambaLM:
    """
    A causal language model over the library's blocks, on the CPU (f32 compute).
    """

    @staticmethod
    def load(dir: str, weight_dtype: str | None = None) -> JambaLM:
        """
        Loads a checkpoint directory (config.json and model.safetensors, or sharded safetensors). weight_dtype 'f32', 'f16' or 'bf16' converts the large matrices; None keeps the checkpoint's dtype.
        """

    @staticmethod
    def init(config_json: str, seed: int = 0) -> JambaLM:
        """
        A randomly initialized model of the config (config.json's text, as load reads it), from seed.
        """

    def save(self, dir: str) -> None:
        """
        Writes config.json and model.safetensors (f32) into dir, which load reads back.
        """

    def logits_capsule(self, ids: Annotated[NDArray, dict(writable=False)]) -> object:
        """
        Logits for every position: ids (b, l) int32 or int64 -> (b, l, padded_vocab) float32 capsule.
        """

    def generate(self, prompt: Sequence[int], max_new_tokens: int, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop_ids: Sequence[int] | None = None, prefill_chunk: int = 0) -> list[int]:
        """
        Continues one prompt (token ids); returns the new tokens only. temperature 0 is greedy; stop_ids None stops at the config's end-of-sequence ids, [] never stops early.
        """

    def set_threads(self, n: int) -> None:
        """CPU threads for the forward (0: automatic)."""

    @property
    def threads(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def padded_vocab(self) -> int: ...

    @property
    def d_model(self) -> int: ...

    @property
    def n_layer(self) -> int: ...

    @property
    def weight_bytes(self) -> int: ...

class StripedHyenaLM:
    """
    A causal language model over the library's blocks, on the CPU (f32 compute).
    """

    @staticmethod
    def load(dir: str, weight_dtype: str | None = None) -> StripedHyenaLM:
        """
        Loads a checkpoint directory (config.json and model.safetensors, or sharded safetensors). weight_dtype 'f32', 'f16' or 'bf16' converts the large matrices; None keeps the checkpoint's dtype.
        """

    @staticmethod
    def init(config_json: str, seed: int = 0) -> StripedHyenaLM:
        """
        A randomly initialized model of the config (config.json's text, as load reads it), from seed.
        """

    def save(self, dir: str) -> None:
        """
        Writes config.json and model.safetensors (f32) into dir, which load reads back.
        """

    def logits_capsule(self, ids: Annotated[NDArray, dict(writable=False)]) -> object:
        """
        Logits for every position: ids (b, l) int32 or int64 -> (b, l, padded_vocab) float32 capsule.
        """

    def generate(self, prompt: Sequence[int], max_new_tokens: int, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop_ids: Sequence[int] | None = None, prefill_chunk: int = 0) -> list[int]:
        """
        Continues one prompt (token ids); returns the new tokens only. temperature 0 is greedy; stop_ids None stops at the config's end-of-sequence ids, [] never stops early.
        """

    def set_threads(self, n: int) -> None:
        """CPU threads for the forward (0: automatic)."""

    @property
    def threads(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def padded_vocab(self) -> int: ...

    @property
    def d_model(self) -> int: ...

    @property
    def n_layer(self) -> int: ...

    @property
    def weight_bytes(self) -> int: ...

class Tokenizer:
    """Hugging Face tokenizer.json (byte-level BPE: GPT-2, GPT-NeoX)."""

    @staticmethod
    def load(path: str) -> Tokenizer:
        """Reads a tokenizer.json file."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of text, as tokenizers' Tokenizer.encode(text).ids."""

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of token ids."""

    def token_to_id(self, token: str) -> int | None: ...

    def id_to_token(self, id: int) -> str | None: ...

    @property
    def vocab_size(self) -> int: ...

class Trainer:
    """
    A language model over named mixers (embedding, pre-norm residual layers, final RMSNorm, untied head), or a Mamba / Mamba-2 checkpoint's model (from_model: its layers, its tied or untied head), with AdamW (decoupled weight decay on all but norms, the embedding and S4 kernels), a warmup-cosine learning-rate schedule and global-norm gradient clipping: example_train driven from Python with the caller's batches. float32 on the CPU.
    """

    def __init__(self, vocab: int, d_model: int, mixers: Sequence[str], heads: int = 2, d_state: int = 16, rank: int = 8, max_len: int = 0, lr: float = 0.001, min_lr: float = -1.0, warmup: int = 100, steps: int = 1000, weight_decay: float = 0.01, clip_norm: float = 1.0, seed: int = 0, threads: int = 0) -> None:
        """
        mixers: one name per layer, of deltanet, gated_deltanet, linear_attention, retnet, gla, ttt, rwkv7, rwkv4, rwkv4_channel, mamba, mamba_s4d, s6, s4d, mamba2, hyena, striped_hyena, s4d_layer, s4_layer, attention, moe (8 experts, 2 per token). heads (all but the Mamba-1 family, Hyena, RWKV-4, the S4 layers and moe), d_state (Mamba, Mamba-2; the S4 layers' N, even; StripedHyena's poles per channel), rank (RWKV-7), max_len (Hyena: the longest sequence, its filters' length; s4_layer: the longest training length, C~'s; striped_hyena: its filter's taps, 2048 when 0). The schedule: linear warmup over `warmup` steps to lr, cosine to min_lr (-1: lr / 10) at `steps`.
        """

    def to_model(self) -> MambaLM | Mamba2LM:
        """
        The checkpoint model (MambaLM or Mamba2LM) with the trained weights, for a trainer made by from_model: generate with it, or save() it as a Hugging Face checkpoint.
        """

    def step(self, ids: Annotated[NDArray, dict(writable=False)], targets: Annotated[NDArray, dict(writable=False)]) -> dict:
        """
        One training step: ids (b, l) int32/int64, targets (b l) or (b, l) int32/int64 (-100: not counted). Returns {loss, count, correct, accuracy, lr, grad_norm, step} (the loss and accuracy before the update).
        """

    def evaluate(self, ids: Annotated[NDArray, dict(writable=False)], targets: Annotated[NDArray, dict(writable=False)]) -> dict:
        """
        The loss and accuracy without a step: {loss, count, correct, accuracy}.
        """

    def logits_capsule(self, ids: Annotated[NDArray, dict(writable=False)]) -> object:
        """Logits (b, l, vocab) float32 for ids (b, l), as a capsule."""

    def save(self, path: str, metadata: Mapping[str, str] = {}) -> None:
        """
        Writes the training state (parameters, AdamW moments, step; and string metadata) to a safetensors file.
        """

    def load(self, path: str) -> dict[str, str]:
        """
        Restores a state saved by a Trainer of the same mixers and sizes (else ssm.Error, nothing changed); returns its metadata.
        """

    def parameter_names(self) -> list[str]:
        """Every parameter's name, in the optimizer's order."""

    def parameter_capsule(self, name: str) -> object:
        """A copy of one parameter, flat float32, as a capsule."""

    def lr_at(self, step: int) -> float:
        """The schedule's learning rate at a step (counted from 0)."""

    @property
    def steps(self) -> int:
        """Optimizer steps taken."""

    @property
    def num_parameters(self) -> int: ...

    @property
    def vocab(self) -> int: ...

    @property
    def d_model(self) -> int: ...

    @overload
    @staticmethod
    def from_model(lm: MambaLM, *, lr: float = 0.0001, min_lr: float = -1.0, warmup: int = 100, steps: int = 1000, weight_decay: float = 0.01, clip_norm: float = 1.0) -> Trainer: ...

    @overload
    @staticmethod
    def from_model(lm: Mamba2LM, *, lr: float = 0.0001, min_lr: float = -1.0, warmup: int = 100, steps: int = 1000, weight_decay: float = 0.01, clip_norm: float = 1.0) -> Trainer:
        """
        A trainer of a loaded MambaLM or Mamba2LM (fine-tuning): its weights in float32, the same logits; the rates as the constructor's. to_model() gives the checkpoint model back with the trained weights.
        """

def view_info(a: Annotated[NDArray, dict(writable=False)]) -> tuple:
    """
    What an op reads of array a, without copying it: (data address, shape, strides in elements, dtype, device).
    """
