"""Selective SSM layer of SPEC 001 (Honarpisheh et al., arXiv 2502.01473): real diagonal A, input-dependent Δ, B, C.

Per step: Δ_t = softplus(p + qᵀu_t), B_t = W_B u_t, C_t = W_C u_t (∈ ℝ^N), x_t = exp(Δ_t A) ⊙ x_{t−1} + Δ_t B_t u_t
(x_t ∈ ℝ^{d×N}, x_t[i,n] = e^{Δ_t A[i,n]} x_{t−1}[i,n] + Δ_t B_t[n] u_t[i]), y_t[i] = Σ_n C_t[n] x_t[i,n]; x_{−1} = 0.

Init follows the paper's code (Arya-Honarpisheh/gen_err_sel_ssm, models/selective_ssm.py, run with fix_sA=False as in
its run_main.sh, so A is trained): A = −10·U(0,1) + s_A with A[:,0] = s_A, so max A = s_A exactly at init;
W_B, W_C ~ N(0,1) of shape (N d); q ~ N(0,1) of shape (d); p ~ N(0,1) of shape (1). No bias, no D·u skip term
(the paper's heads read y directly). Not offered: its use_delta=False (Δ ≡ 1) and fix_sA=True (A frozen at s_A).
A is unconstrained: training may move s_A = max A either way, and s_A > 0 makes x_t grow like e^{s_A Σ Δ}.

The forward pass runs chunks of 256 steps in turn (state carried over); within a chunk an odd–even (cyclic-reduction)
scan over time, `scan`: no Python loop over steps, O(L) work, log₂(256) = 8 levels, backward by the adjoint scan.
It only multiplies the factors e^{Δ_t A} (never forms e^{+large}, not even for s_A > 0), so it overflows only where
the recurrence itself does. `selective_loop` is the step-by-step reference.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def scan(a: torch.Tensor, b: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """x_t = a_t ⊙ x_{t−1} + b_t along dim 0 (x_{−1} = 0; reverse: x_t = a_t ⊙ x_{t+1} + b_t, x_L = 0) by odd–even
    reduction: fold each pair of steps into one, recurse on L/2 steps, fill in the others. a, b: (L ...) -> x: (L ...).
    Only shape-dependent branching (vmap-safe); pairs by unflatten/unbind, not strided slices (their backward fills zeros)."""
    L = a.shape[0]
    if L == 1:
        return b.clone()                                                         # a new tensor, as for L > 1
    if L % 2:                                                                    # pad with the identity step (1, 0)
        x = scan(torch.cat([a, torch.ones_like(a[:1])]), torch.cat([b, torch.zeros_like(b[:1])]), reverse)
        return x.split([L, 1])[0]                                                # (L ...)
    m, i, j = L // 2, int(reverse), 1 - int(reverse)                             # step i of a pair comes first
    a_pair, b_pair = a.unflatten(0, (m, 2)).unbind(1), b.unflatten(0, (m, 2)).unbind(1)   # 2 × (m ...)
    x_j = scan(a_pair[j] * a_pair[i], torch.addcmul(b_pair[j], a_pair[j], b_pair[i]), reverse)  # (m ...)
    zero = torch.zeros_like(x_j[:1])
    x_before = (torch.cat([x_j.split([1, m - 1])[1], zero]) if reverse           # (m ...) state entering step i
                else torch.cat([zero, x_j.split([m - 1, 1])[0]]))
    x_i = torch.addcmul(b_pair[i], a_pair[i], x_before)                          # (m ...)
    return torch.stack([x_i, x_j] if j else [x_j, x_i], 1).flatten(0, 1)         # (L ...)


class _Scan(torch.autograd.Function):
    """`scan` with the adjoint recurrence as backward: λ_t = g_t + a_{t+1} λ_{t+1}, ∂/∂b_t = λ_t, ∂/∂a_t = λ_t x_{t−1}.
    Saves only a and x, instead of autograd's per-level intermediates."""
    generate_vmap_rule = True

    @staticmethod
    def forward(a, b):
        return scan(a, b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)

    @staticmethod
    def backward(ctx, g):
        a, x = ctx.saved_tensors                                                 # (L ...)
        L = a.shape[0]
        a_next = torch.cat([a.split([1, L - 1])[1], torch.ones_like(a[:1])])    # (L ...) a_{t+1}
        lam = scan(a_next, g, reverse=True)                                      # (L ...)
        x_prev = torch.cat([torch.zeros_like(x[:1]), x.split([L - 1, 1])[0]])   # (L ...) x_{t−1}
        return lam * x_prev, lam


class Selective(nn.Module):
    def __init__(self, d_model: int, d_state: int, s_A: float = 0.0, A_spread: float = 10.0, chunk: int = 256):
        super().__init__()
        d, N = d_model, d_state
        A = -A_spread * torch.rand(d, N) + s_A                                   # (d N), A ≤ s_A
        A[:, 0] = s_A                                                            # spectral abscissa set exactly
        self.A = nn.Parameter(A)                                                 # (d N), trained, unconstrained
        self.W_B = nn.Parameter(torch.randn(N, d))                               # (N d)
        self.W_C = nn.Parameter(torch.randn(N, d))                               # (N d)
        self.q = nn.Parameter(torch.randn(d))                                    # (d)
        self.p = nn.Parameter(torch.randn(1))                                    # (1)
        self.chunk = chunk                                                       # steps per scan (speed only)

    def spectral_abscissa(self) -> torch.Tensor:
        """s_A = max Re λ(A) = max over the real diagonal A (a 0-dim tensor, differentiable)."""
        return self.A.max()

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: (B L d) -> y: (B L d). Chunks of `chunk` steps in turn, each by one `scan`, the state x carried over
        (folded into the chunk's first step: b_0 += a_0 ⊙ x_in); chunking keeps the (T B d N) tensors in cache."""
        u_t = u.transpose(0, 1)                                                  # (L B d)
        delta = F.softplus(self.p + u_t @ self.q)                                # (L B)
        B_t, C_t = u_t @ self.W_B.T, u_t @ self.W_C.T                            # (L B N)
        x_in, ys = None, []
        for dt, Bc, Cc, uc in zip(*(t.split(self.chunk) for t in (delta, B_t, C_t, u_t))):
            a = torch.exp(dt[..., None, None] * self.A)                          # (T B d N)  Ā_t = exp(Δ_t A)
            b = (dt[..., None] * Bc)[..., None, :] * uc[..., None]               # (T B d N)  Δ_t B_t u_t
            if x_in is not None:
                b0, b_rest = b.split([1, b.shape[0] - 1])
                b = torch.cat([torch.addcmul(b0, a[:1], x_in), b_rest])
            x = _Scan.apply(a, b)                                                # (T B d N)
            ys.append((x * Cc[..., None, :]).sum(-1))                            # (T B d)  y_t = Σ_n C_t[n] x_t[:,n]
            x_in = x.split([x.shape[0] - 1, 1])[1]                               # (1 B d N)
        return torch.cat(ys).transpose(0, 1)                                     # (B L d)


def selective_loop(layer: Selective, u: torch.Tensor) -> torch.Tensor:
    """Reference: the recurrence step by step (a Python loop over t), as in the paper's code. u: (B L d) -> (B L d)."""
    delta = F.softplus(layer.p + torch.einsum("bld,d->bl", u, layer.q))          # (B L)
    B_t = torch.einsum("nd,bld->bln", layer.W_B, u)                              # (B L N)
    C_t = torch.einsum("nd,bld->bln", layer.W_C, u)                              # (B L N)
    x = u.new_zeros(u.shape[0], *layer.A.shape)                                  # (B d N)
    ys = []
    for t in range(u.shape[1]):
        dt = delta[:, t, None, None]                                             # (B 1 1)
        x = torch.exp(dt * layer.A) * x + dt * B_t[:, t, None, :] * u[:, t, :, None]
        ys.append(torch.einsum("bdn,bn->bd", x, C_t[:, t]))
    return torch.stack(ys, 1)                                                    # (B L d)

