"""Selective SSM layer of SPEC 001 (Honarpisheh et al., arXiv 2502.01473): real diagonal A, input-dependent Δ, B, C.

Per step: Δ_t = softplus(p + qᵀu_t), B_t = W_B u_t, C_t = W_C u_t (∈ ℝ^N), x_t = exp(Δ_t A) ⊙ x_{t−1} + Δ_t B_t u_t
(x_t ∈ ℝ^{d×N}, x_t[i,n] = e^{Δ_t A[i,n]} x_{t−1}[i,n] + Δ_t B_t[n] u_t[i]), y_t[i] = Σ_n C_t[n] x_t[i,n]; x_{−1} = 0.

Init follows the paper's code (Arya-Honarpisheh/gen_err_sel_ssm, models/selective_ssm.py, run with fix_sA=False as in
its run_main.sh, so A is trained): A = −10·U(0,1) + s_A with A[:,0] = s_A, so max A = s_A exactly at init;
W_B, W_C ~ N(0,1) of shape (N d); q ~ N(0,1) of shape (d); p ~ N(0,1) of shape (1). No bias, no D·u skip term
(the paper's heads read y directly). Not offered: its use_delta=False (Δ ≡ 1) and fix_sA=True (A frozen at s_A).
A is unconstrained: training may move s_A = max A either way, and s_A > 0 makes x_t grow like e^{s_A Σ Δ}.

On CPU (float32/float64, plain tensors or under vmap) the layer's scan is the fused C++ kernel of `selective_cpu`
(state on the stack, nothing of size L·B·d·N stored; compiled at first use); the projections Δ, B_t, C_t stay here.
Elsewhere (CUDA, no compiler, torch.func.grad/jvp) it is the eager scan, `forward_eager`:
The scan, `_SelectiveScan`, runs blocks of steps in turn (state carried over), each block cut into C chunks of T
steps laid out (T C ...), so that one op on a (C B d N) slice advances all C chunks by a step: pass 1 finds each
chunk's end state from a zero start, a loop over the C chunks carries the state across (x_in[c+1] = e^{A·ΣΔ_c}
x_in[c] + h_c), pass 2 reruns the chunks from their true start states. O(L) work in about 4T + C ops per block,
not one per step. On CPU a block holds BLOCK_STATE state elements, so that its passes stay in cache; on CUDA one
block holds up to 2^26 (one for most sequences: there launches, not bytes, cost); the points of a pack (vmap) share
that budget, and the steps are spread evenly over the blocks they need (`chunking`), so padding stays under √ of a
block's steps per block. The forward keeps only the chunk
start states; the backward recomputes each block's states from them and runs the adjoint scan the same way in reverse
time, with every gradient in closed form, so no (L B d N) tensor is stored or written to memory.
Chunk products e^{A·ΣΔ} overflow only where the states of that chunk do; they are clamped below e·(smallest
normal number) (`_product_exp`). `selective_loop` is the step-by-step reference.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmpipe.models import selective_cpu

BLOCK_STATE = {"cpu": 2**18, "cuda": 2**26}  # elements of a (T C B d N) block: 1 MiB float32 stays in a CPU's cache


def to_blocks(x: torch.Tensor, T: int, C: int) -> torch.Tensor:
    """(L ...) -> (K T C ...): blocks of C chunks of T steps, step k·CT + c·T + t at [k, t, c], zero-padded at the end
    (a padded step of u has B u = 0, so it changes no state before it, nor, its gradient being 0, any gradient)."""
    K, pad = -(-x.shape[0] // (T * C)), -x.shape[0] % (T * C)
    if pad:
        x = torch.cat([x, x.new_zeros(pad, *x.shape[1:])])  # (K·C·T ...)
    return x.unflatten(0, (K, C, T)).transpose(1, 2).contiguous()  # (K T C ...)


def from_blocks(x: torch.Tensor, L: int) -> torch.Tensor:
    """(K T C ...) -> (L ...), the inverse of `to_blocks`."""
    return x.transpose(1, 2).flatten(0, 2)[:L]


def _shift(v: torch.Tensor, step: int) -> torch.Tensor:
    """v (K T C ...) -> v' with v'[time τ] = v[time τ + step] (step ±1), zero where τ + step is outside."""
    K, T, C = v.shape[:3]
    flat = from_blocks(v, K * T * C)  # (K·C·T ...) in time order
    zero = torch.zeros_like(flat[:1])
    flat = torch.cat([flat[1:], zero] if step == 1 else [zero, flat[:-1]])
    return flat.unflatten(0, (K, C, T)).transpose(1, 2).contiguous()  # (K T C ...)


def _carry(h: torch.Tensor, P: torch.Tensor, s: torch.Tensor, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """States entering each chunk: s_c = P_{c−1} s_{c−1} + h_{c−1} from s_0 = s, the state entering the block
    (reverse: from the last chunk backwards). h, P: (C ...) chunk results from a zero start and chunk products of Ā,
    s: (...) -> (C ...) and the state leaving the block (...)."""
    out = []
    for c in reversed(range(h.shape[0])) if reverse else range(h.shape[0]):
        out.append(s)
        s = torch.addcmul(h[c], P[c], s)
    return torch.stack(out[::-1] if reverse else out), s


def _chunk_ends(a: torch.Tensor, b: torch.Tensor, reverse: bool) -> torch.Tensor:
    """Pass 1: each chunk's final state from a zero start (reverse: its state at step 0). a, b: (T C ...) (a may be a
    list of T (C ...) tensors) -> (C ...).
    In place on one (C ...) buffer."""
    steps = range(len(a))
    h = (b[-1] if reverse else b[0]).clone()
    for t in reversed(steps[:-1]) if reverse else steps[1:]:
        h.mul_(a[t]).add_(b[t])
    return h


def _product_exp(z: torch.Tensor) -> torch.Tensor:
    """e^z for a product of many Ā, with z clamped below at 1 + the log of the smallest normal number: e^z then
    changes by less than 3.3e-38 in float32 (6.1e-308 in float64), and exp's slow path for subnormal results
    (~30-50× per element on CPU), which chunk products would nearly always take, is never taken."""
    return torch.exp(z.clamp(min=math.log(torch.finfo(z.dtype).tiny) + 1))


def _decays(delta: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ā_t = e^{Δ_t A} (T C B d N) and the chunk products Π_t Ā_t = e^{A Σ_t Δ_t} (C B d N), from Δ (T C B), A (d N)."""
    return (delta[..., None, None] * A).exp_(), _product_exp(delta.sum(0)[..., None, None] * A)


def _run(a: torch.Tensor, x: torch.Tensor, x_in: torch.Tensor) -> None:
    """Pass 2, in place on x: b_t -> x_t = Ā_t x_{t−1} + b_t from the chunk start states x_in. a, x: (T C ...), x_in:
    (C ...). a is kept (the backward reads Ā_{t+1} from it); Ā_t x_{t−1} is a small (C ...) temporary per step."""
    for t in range(x.shape[0]):
        x[t].add_(a[t] * (x_in if t == 0 else x[t - 1]))


class _SelectiveScan(torch.autograd.Function):
    """y = the scan, block after block (state carried), each block by chunks laid out (T C ...): inputs Δ (K T C B),
    A (d N), B_t, C_t (K T C B N), u (K T C B d) -> y (K T C B d), plus the chunk start states (K C B d N), the only
    state kept for backward (not differentiable), which recomputes each block's states x_t from them in cache.
    Per-step ops are in place or on small (C B d N) tensors (mul_/add_: vmap has batching rules for them)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(delta, A, Bm, Cm, u):
        s, ys, starts = torch.zeros(*u.shape[3:], A.shape[-1], dtype=u.dtype, device=u.device), [], []  # (B d N)
        for k in range(delta.shape[0]):
            a, P = _decays(delta[k], A)  # (T C B d N), (C B d N)
            x = (delta[k, ..., None] * Bm[k])[..., None, :] * u[k, ..., None]  # (T C B d N) b_t = Δ_t B_t u_t
            x_in, s = _carry(_chunk_ends(a, x, False), P, s, False)  # (C B d N), state leaving the block
            _run(a, x, x_in)
            ys.append((x @ Cm[k, ..., None]).squeeze(-1))  # (T C B d) y_t = Σ_n C_t[n] x_t
            starts.append(x_in)
        return torch.stack(ys), torch.stack(starts)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(*inputs, output[1])

    @staticmethod
    def backward(ctx, gy, _gs):
        """Adjoint: λ_t = C_t ⊗ gy_t + Ā_{t+1} λ_{t+1}; ∂b_t = λ_t; Ā_t ∂Ā_t = w_t = λ_t Ā_t x_{t−1}, formed in the
        pass as w_{t+1} = (Ā_{t+1} λ_{t+1}) ⊙ x_t (w_0 = 0, as x_{−1} = 0), over x's buffer once ∂C_t has read it."""
        delta, A, Bm, Cm, u, starts = ctx.saved_tensors
        nxt = _shift(delta, 1)  # (K T C B) Δ_{t+1}
        s, d_A, grads = torch.zeros_like(starts[0, 0]), torch.zeros_like(A), []  # s: λ entering from the next block
        for k in reversed(range(delta.shape[0])):
            a, _ = _decays(delta[k], A)  # (T C B d N)
            x = (delta[k, ..., None] * Bm[k])[..., None, :] * u[k, ..., None]  # (T C B d N)
            _run(a, x, starts[k])  # x_t, recomputed
            d_C = (gy[k, ..., None, :] @ x).squeeze(-2)  # (T C B N) ∂C_t = Σ_i gy_t[i] x_t[i]
            a_last = (nxt[k, -1, ..., None, None] * A).exp_()  # (C B d N) Ā_{t+1} at t = T−1
            P = _product_exp(nxt[k].sum(0)[..., None, None] * A)  # (C B d N) Π_t Ā_{t+1}
            a_next = [a[t + 1] for t in range(a.shape[0] - 1)] + [a_last]  # T × (C B d N) Ā_{t+1}
            lam = gy[k, ..., None] * Cm[k, ..., None, :]  # (T C B d N)
            lam_in, s = _carry(_chunk_ends(a_next, lam, True), P, s, True)  # (C B d N) λ at the next chunk's start
            for t in reversed(range(lam.shape[0])):  # pass 2: -> λ_t; x_t -> w_{t+1}
                step = a_next[t] * (lam_in if t == lam.shape[0] - 1 else lam[t + 1])  # (C B d N) Ā_{t+1} λ_{t+1}
                lam[t].add_(step)
                x[t].mul_(step)
            lam_B = (lam @ Bm[k, ..., None]).squeeze(-1)  # (T C B d) Σ_n λ_t B_t[n]
            d_A += (nxt[k].flatten() @ x.flatten(0, 2).flatten(1)).view_as(A)  # Σ_t Δ_t w_t
            grads.append(
                (
                    x.flatten(-2) @ A.flatten(),  # (T C B) ∂Δ_{t+1} via Ā
                    (u[k] * lam_B).sum(-1),  # (T C B) ∂Δ_t via b
                    delta[k, ..., None] * (u[k, ..., None, :] @ lam).squeeze(-2),  # (T C B N) ∂B_t
                    d_C,
                    delta[k, ..., None] * lam_B,
                )
            )  # (T C B d) ∂u_t
        d_next, d_b, d_B, d_C, d_u = (torch.stack(g[::-1]) for g in zip(*grads))
        return _shift(d_next, -1) + d_b, d_A, d_B, d_C, d_u


class Selective(nn.Module):
    def __init__(self, d_model: int, d_state: int, s_A: float = 0.0, A_spread: float = 10.0, chunk: int | None = None):
        super().__init__()
        d, N = d_model, d_state
        A = -A_spread * torch.rand(d, N) + s_A  # (d N), A ≤ s_A
        A[:, 0] = s_A  # spectral abscissa set exactly
        self.A = nn.Parameter(A)  # (d N), trained, unconstrained
        self.W_B = nn.Parameter(torch.randn(N, d))  # (N d)
        self.W_C = nn.Parameter(torch.randn(N, d))  # (N d)
        self.q = nn.Parameter(torch.randn(d))  # (d)
        self.p = nn.Parameter(torch.randn(1))  # (1)
        self.chunk = chunk  # steps per chunk T (speed only)

    def spectral_abscissa(self) -> torch.Tensor:
        """s_A = max Re λ(A) = max over the real diagonal A (a 0-dim tensor, differentiable)."""
        return self.A.max()

    def chunking(self, L: int, state: int, device: torch.device) -> tuple[int, int]:
        """(T, C): blocks of C chunks of T steps for a sequence of L steps; state: state elements per step (B d N,
        times the points packed under vmap: they share the block's budget).

        A block holds at most ≈ BLOCK_STATE elements, so the L steps need n = ⌈L / cap⌉ blocks (cap: the steps
        that fit); they are spread evenly, s = ⌈L / n⌉ steps to a block, so the last block is not mostly padding.
        T is `chunk`, or ≈ √s (it balances the ~4T ops of the passes and the C of the carry): of T within
        [¾, 5⁄4]·⌊√s⌋, the one whose C = ⌈s / T⌉ chunks pad the least (then the nearest to ⌊√s⌋). Padded steps,
        n·T·C − L, are then fewer than n·⌊√s⌋ (n·`chunk` with a chunk): T = ⌊√s⌋ pads a block by under ⌊√s⌋,
        and spreading L over n blocks by under n."""
        cap = min(L, max(1, BLOCK_STATE.get(device.type, BLOCK_STATE["cpu"]) // state))  # steps a block may hold
        blocks = -(-L // cap)
        steps = -(-L // blocks)  # steps per block, spread evenly
        if self.chunk:
            T = min(steps, self.chunk)
            return T, -(-steps // T)
        root = math.isqrt(steps)
        candidates = range(max(1, 3 * root // 4), min(steps, 5 * root // 4) + 1)
        T = min(candidates, key=lambda T: (-(-steps // T) * T - steps, abs(T - root)))
        return T, -(-steps // T)

    @staticmethod
    def padded_steps(L: int, T: int, C: int) -> int:
        """Steps of padding `to_blocks` adds to L steps cut into blocks of C chunks of T steps."""
        return -L % (T * C)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: (B L d) -> y: (B L d), by the fused CPU kernel where it can run (`selective_cpu.usable`), else eager."""
        if selective_cpu.usable(u, *self.parameters()):
            delta = F.softplus(self.p + u @ self.q)  # (B L)
            B_t, C_t = u @ self.W_B.T, u @ self.W_C.T  # (B L N)
            return selective_cpu.scan(delta, self.A, B_t, C_t, u)  # (B L d)
        return self.forward_eager(u)

    def forward_eager(self, u: torch.Tensor) -> torch.Tensor:
        """u: (B L d) -> y: (B L d), by `_SelectiveScan` over blocks of chunks (any device, under vmap too)."""
        L = u.shape[1]
        T, C = self.chunking(L, packed_points(u) * u.shape[0] * self.A.numel(), u.device)
        u_b = to_blocks(u.transpose(0, 1), T, C)  # (K T C B d)
        delta = F.softplus(self.p + u_b @ self.q)  # (K T C B)
        B_t, C_t = u_b @ self.W_B.T, u_b @ self.W_C.T  # (K T C B N)
        y, _ = _SelectiveScan.apply(delta, self.A, B_t, C_t, u_b)  # (K T C B d)
        return from_blocks(y, L).transpose(0, 1)  # (B L d)


def packed_points(t: torch.Tensor) -> int:
    """How many packed points t stands for: the product of the sizes of the vmap levels it is batched over (1 outside
    vmap; PackedModel maps a point's module over the K points of a pack with vmap)."""
    functorch = torch._C._functorch
    n = 1
    while functorch.is_functorch_wrapped_tensor(t):
        if functorch.is_batchedtensor(t):
            bdim = functorch.maybe_get_bdim(t)
            t = functorch.get_unwrapped(t)
            n *= t.shape[bdim]
        else:
            t = functorch.get_unwrapped(t)
    return n


def selective_loop(layer: Selective, u: torch.Tensor) -> torch.Tensor:
    """Reference: the recurrence step by step (a Python loop over t), as in the paper's code. u: (B L d) -> (B L d)."""
    delta = F.softplus(layer.p + torch.einsum("bld,d->bl", u, layer.q))  # (B L)
    B_t = torch.einsum("nd,bld->bln", layer.W_B, u)  # (B L N)
    C_t = torch.einsum("nd,bld->bln", layer.W_C, u)  # (B L N)
    x = u.new_zeros(u.shape[0], *layer.A.shape)  # (B d N)
    ys = []
    for t in range(u.shape[1]):
        dt = delta[:, t, None, None]  # (B 1 1)
        x = torch.exp(dt * layer.A) * x + dt * B_t[:, t, None, :] * u[:, t, :, None]
        ys.append(torch.einsum("bdn,bn->bd", x, C_t[:, t]))
    return torch.stack(ys, 1)  # (B L d)
