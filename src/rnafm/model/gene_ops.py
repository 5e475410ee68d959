"""Per-token gene ops: token input MLPs and output heads, fast (bucketed) and loop (oracle).

Every pathway token t owns its member genes ``members[t]`` (n_t of them). The input of token t is
``x[:, members[t]] @ W_in[t].T + b_in[t]`` and its head writes ``y[:, t] @ W_out[t].T + b_out[t]``
to its genes; a gene in several tokens gets the average of their heads.

The fast path sorts tokens by size and cuts them into buckets (a small dynamic programme trades
padding against the number of buckets). The parameters of one bucket are stacked and padded to
the bucket's widest token, so a bucket is one batched matmul; all member values are gathered with
one index op and head outputs of all buckets are summed into genes with one segment sum. Padded
weights meet zero inputs (or write into a discarded dummy gene), so they get zero gradients and
never change the result. The loop path walks the tokens one by one over the very same parameters.

The gather and the segment sum are each other's adjoint. On CPU the segment sum is one sparse
(CSR) matrix product over the slots sorted by gene: ``index_add_`` along the first dimension
runs as a multi-threaded scatter there, which costs ~100 ms per call at the paper's scale on a
busy 2-core machine. Elsewhere it is ``index_add_``.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnafm.model.config import HeadModulation, Implementation

__all__ = ["GeneTokenEmbed", "GeneTokenHeads", "TokenLayout", "plan_buckets"]


def plan_buckets(sizes: np.ndarray, overhead: int) -> list[int]:
    """Cut ascending ``sizes`` into contiguous buckets minimising padded slots + overhead each.

    Parameters
    ----------
    sizes
        Token sizes sorted ascending, shape (T,).
    overhead
        Cost of one bucket in padded gene slots.

    Returns
    -------
    list[int]
        Bucket end positions (exclusive), last one equal to T.
    """
    n = len(sizes)
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):  # bucket (i, j] costs (j - i) * sizes[j - 1] + overhead
        i = np.arange(j)
        cost = best[:j] + (j - i) * float(sizes[j - 1]) + overhead
        k = int(np.argmin(cost))
        best[j], cut[j] = cost[k], k
    ends, j = [], n
    while j > 0:
        ends.append(j)
        j = int(cut[j])
    return ends[::-1]


@dataclass(frozen=True)
class TokenLayout:
    """Tokens in slot order (sorted by size) and their buckets.

    Attributes
    ----------
    n_genes
        Number of genes G.
    order
        (T,) original token index of each slot.
    members
        Member gene indices of each slot.
    buckets
        (start, stop, width) of each bucket, in slots; width is the largest size in the bucket.
    """

    n_genes: int
    order: np.ndarray
    members: tuple[np.ndarray, ...]
    buckets: tuple[tuple[int, int, int], ...]

    @classmethod
    def build(cls, members: Sequence[np.ndarray], *, n_genes: int, overhead: int) -> TokenLayout:
        """Sort tokens by size and plan buckets; raise ValueError on empty tokens or genes."""
        members = [np.asarray(m, dtype=np.int64).reshape(-1) for m in members]
        sizes = np.array([len(m) for m in members], dtype=np.int64)
        if len(members) == 0 or sizes.min() == 0:
            raise ValueError("every pathway token needs at least one member gene")
        flat = np.concatenate(members)
        if flat.min() < 0 or flat.max() >= n_genes:
            raise ValueError(f"token member indices must lie in [0, {n_genes})")
        if np.bincount(flat, minlength=n_genes).min() == 0:
            raise ValueError("some genes belong to no token; add background tokens for them")
        order = np.argsort(sizes, kind="stable")
        ends = plan_buckets(sizes[order], overhead)
        starts = [0, *ends[:-1]]
        buckets = tuple((s, e, int(sizes[order[e - 1]])) for s, e in zip(starts, ends, strict=True))
        return cls(n_genes, order, tuple(members[i] for i in order), buckets)

    @property
    def n_tokens(self) -> int:
        return len(self.members)

    def padded_index(self) -> np.ndarray:
        """Flat (S,) gene index of every padded slot, bucket by bucket; padding points at G."""
        parts = []
        for start, stop, width in self.buckets:
            idx = np.full((stop - start, width), self.n_genes, dtype=np.int64)
            for row, m in enumerate(self.members[start:stop]):
                idx[row, : len(m)] = m
            parts.append(idx.reshape(-1))
        return np.concatenate(parts)

    def gene_counts(self) -> np.ndarray:
        """(G,) number of tokens each gene belongs to."""
        return np.bincount(np.concatenate(self.members), minlength=self.n_genes)

    def bucket_tokens(self) -> list[int]:
        """Number of tokens of each bucket."""
        return [stop - start for start, stop, _ in self.buckets]

    def bucket_slots(self) -> list[int]:
        """Number of padded gene slots of each bucket (tokens x width)."""
        return [(stop - start) * width for start, stop, width in self.buckets]


class SlotSum:
    """Segment sums of padded slots into genes, and the gather that is their adjoint.

    ``index`` (S,) is the gene (row of a (G+1, B) table, row G the padding) of every slot.
    :meth:`gather` is ``table[index]`` (S, B); :meth:`sum` adds the slot rows (S, B) into their
    genes (G+1, B). Each is the other's backward. On CPU the sum is a CSR matrix product over
    the slots sorted by gene; elsewhere both are the native ``index_select`` / ``index_add_``.
    """

    def __init__(self, index: np.ndarray, n_rows: int) -> None:
        order = np.argsort(index, kind="stable")  # slots sorted by gene, in slot order
        counts = np.bincount(index, minlength=n_rows)
        self.n_rows = n_rows
        self.crow = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        self.col = torch.from_numpy(order.astype(np.int64))

    def sum(self, vals: Tensor, index: Tensor) -> Tensor:
        """(G+1, B) sums of the slot rows ``vals`` (S, B) per gene."""
        if vals.device.type != "cpu":
            out = vals.new_zeros(self.n_rows, vals.shape[1])  # (G+1, B)
            return out.index_add_(0, index, vals)
        return _SlotSumFn.apply(vals, index, self)

    def gather(self, table: Tensor, index: Tensor) -> Tensor:
        """(S, B) rows ``index`` of ``table`` (G+1, B)."""
        if table.device.type != "cpu":
            return table.index_select(0, index)
        return _SlotGatherFn.apply(table, index, self)

    def _csr_sum(self, vals: Tensor) -> Tensor:
        """(G+1, B) = P (G+1, S) @ vals (S, B) with P the 0/1 slot-to-gene matrix, on CPU."""
        with warnings.catch_warnings():  # torch flags CSR support as "beta"
            warnings.simplefilter("ignore", UserWarning)
            ones = torch.ones(len(self.col), dtype=vals.dtype)  # (S,)
            csr = torch.sparse_csr_tensor(
                self.crow, self.col, ones, size=(self.n_rows, len(self.col)),
                check_invariants=False,
            )  # fmt: skip
            return csr @ vals.contiguous()  # (G+1, B)


class _SlotSumFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, vals: Tensor, index: Tensor, slots: SlotSum) -> Tensor:
        ctx.save_for_backward(index)
        return slots._csr_sum(vals)  # (G+1, B)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None  # (S, B)


class _SlotGatherFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, table: Tensor, index: Tensor, slots: SlotSum) -> Tensor:
        ctx.save_for_backward(index)
        ctx.slots = slots
        return table.index_select(0, index)  # (S, B)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return ctx.slots._csr_sum(grad), None, None  # (G+1, B)


def _full_precision(x: Tensor) -> contextlib.AbstractContextManager:
    """Turn autocast off: the gene ops stay in the weights' precision (float32 or float64)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _wide(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast half-precision activations up to the weights' dtype; leave others alone."""
    return x.to(dtype) if x.dtype in (torch.bfloat16, torch.float16) else x


def _uniform_(t: Tensor, bound: float) -> None:
    with torch.no_grad():
        t.uniform_(-bound, bound)


class GeneTokenEmbed(nn.Module):
    """Embed each token from its member genes: per-token Linear(n_t -> H), act, shared Linear."""

    def __init__(self, layout: TokenLayout, hidden: int, implementation: Implementation) -> None:
        super().__init__()
        self.layout = layout
        self.implementation = Implementation(implementation)
        self.weight = nn.ParameterList()  # per bucket (n_b, H, width)
        self.bias = nn.ParameterList()  # per bucket (n_b, H)
        for start, stop, width in layout.buckets:
            w = torch.zeros(stop - start, hidden, width)
            b = torch.zeros(stop - start, hidden)
            for row, m in enumerate(layout.members[start:stop]):
                bound = 1.0 / math.sqrt(len(m))
                _uniform_(w[row, :, : len(m)], bound)
                _uniform_(b[row], bound)
            self.weight.append(nn.Parameter(w))
            self.bias.append(nn.Parameter(b))
        padded = layout.padded_index()
        self.register_buffer("index", torch.from_numpy(padded), persistent=False)
        self.slots = SlotSum(padded, layout.n_genes + 1)
        self.act = nn.GELU(approximate="tanh")
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        """Map gene values x (B, G) to token embeddings (B, T, H) in slot order."""
        with _full_precision(x):  # weight-bandwidth bound: casting weights would cost more
            x = _wide(x, self.weight[0].dtype)  # (B, G)
            h = self._loop(x) if self.implementation is Implementation.LOOP else self._fast(x)
        return self.out(self.act(h))  # (B, T, H)

    def _fast(self, x: Tensor) -> Tensor:
        xt = F.pad(x, (0, 1)).t().contiguous()  # (G+1, B), row G is the zero pad
        flat = self.slots.gather(xt, self.index)  # (S, B) one gather for all tokens
        parts = []
        for xs, (start, stop, width), w, b in zip(  # split: backward is one cat, not a
            flat.split(self.layout.bucket_slots()),  # zero-filled (S, B) per bucket
            self.layout.buckets,
            self.weight,
            self.bias,
            strict=True,
        ):
            xb = xs.view(stop - start, width, -1)  # (n_b, width, B)
            parts.append(torch.baddbmm(b.unsqueeze(-1), w, xb))  # (n_b, H, B)
        return torch.cat(parts, 0).permute(2, 0, 1)  # (B, T, H)

    def _loop(self, x: Tensor) -> Tensor:
        out = []
        for (start, stop, _), w, b in zip(self.layout.buckets, self.weight, self.bias, strict=True):
            for row in range(stop - start):
                m = torch.as_tensor(self.layout.members[start + row], device=x.device)
                wt = w[row, :, : len(m)]  # (H, n_t)
                out.append(x[:, m] @ wt.t() + b[row])  # (B, H)
        return torch.stack(out, 1)  # (B, T, H)

    def padding_parameters(self) -> int:
        """Number of padded (always zero-gradient) entries in the stacked weights."""
        total = sum(w.numel() for w in self.weight)
        used = sum(len(m) for m in self.layout.members) * self.out.in_features
        return total - used


class GeneTokenHeads(nn.Module):
    """Per-token output heads: final adaLN, then Linear(H -> n_t) to each token's genes.

    Genes in several tokens get the mean of their heads. Weights start at zero (adaLN-Zero).
    """

    def __init__(
        self,
        layout: TokenLayout,
        hidden: int,
        implementation: Implementation,
        modulation: HeadModulation,
    ) -> None:
        super().__init__()
        self.layout = layout
        self.implementation = Implementation(implementation)
        self.modulation = HeadModulation(modulation)
        self.hidden = hidden
        n_tokens = layout.n_tokens
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        if self.modulation is HeadModulation.TOKEN:
            self.mod_weight = nn.Parameter(torch.zeros(hidden, n_tokens, 2 * hidden))
            self.mod_bias = nn.Parameter(torch.zeros(n_tokens, 2 * hidden))
        else:
            self.mod = nn.Linear(hidden, 2 * hidden)
            nn.init.zeros_(self.mod.weight)
            nn.init.zeros_(self.mod.bias)
        self.weight = nn.ParameterList(  # per bucket (n_b, width, H)
            nn.Parameter(torch.zeros(stop - start, width, hidden))
            for start, stop, width in layout.buckets
        )
        self.bias = nn.ParameterList(  # per bucket (n_b, width)
            nn.Parameter(torch.zeros(stop - start, width)) for start, stop, width in layout.buckets
        )
        counts = torch.from_numpy(layout.gene_counts()).float()
        padded = layout.padded_index()
        self.register_buffer("index", torch.from_numpy(padded), persistent=False)
        self.slots = SlotSum(padded, layout.n_genes + 1)
        self.register_buffer("count", counts, persistent=False)  # (G,) exact small integers

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        """Map token states h (B, T, H) and conditioning c (B, H) to gene values (B, G)."""
        with _full_precision(h):
            dtype = self.count.dtype
            h, c = _wide(h, dtype), _wide(c, dtype)  # (B, T, H), (B, H)
            if self.implementation is Implementation.LOOP:
                return self._loop(h, c)
            return self._fast(h, c)

    def _modulated(self, h: Tensor, c: Tensor) -> Tensor:
        cs = F.silu(c)  # (B, H)
        if self.modulation is HeadModulation.TOKEN:
            b, t, hid = h.shape
            w = self.mod_weight.view(hid, t * 2 * hid)  # (H, T*2H)
            mod = (cs @ w).view(b, t, 2 * hid) + self.mod_bias  # (B, T, 2H) one GEMM
        else:
            mod = self.mod(cs).unsqueeze(1)  # (B, 1, 2H)
        shift, scale = mod.chunk(2, dim=-1)  # (B, T|1, H) each
        return torch.addcmul(shift, self.norm(h), 1 + scale)  # (B, T, H)

    def _fast(self, h: Tensor, c: Tensor) -> Tensor:
        y = self._modulated(h, c).permute(1, 2, 0).contiguous()  # (T, H, B)
        acc_dtype = self.count.dtype  # accumulate in float32/float64 even under autocast
        vals = [  # split, not slices: one cat in backward instead of a zero fill per bucket
            torch.baddbmm(b.unsqueeze(-1), w, yb).flatten(0, 1)  # (n_b*width, B)
            for yb, w, b in zip(
                y.split(self.layout.bucket_tokens()), self.weight, self.bias, strict=True
            )
        ]
        flat = torch.cat(vals, 0).to(acc_dtype)  # (S, B) slot order; padding slots -> row G
        out = self.slots.sum(flat, self.index)  # (G+1, B) one segment sum for all buckets
        return out[:-1].t() / self.count  # (B, G) mean over the tokens of each gene

    def _loop(self, h: Tensor, c: Tensor) -> Tensor:
        cs = F.silu(c)  # (B, H)
        hn = self.norm(h)  # (B, T, H)
        n_genes = self.layout.n_genes
        out = h.new_zeros(h.shape[0], n_genes, dtype=self.count.dtype)  # (B, G)
        count = torch.zeros_like(self.count)  # (G,)
        slot = 0
        for (start, stop, _), w, b in zip(self.layout.buckets, self.weight, self.bias, strict=True):
            for row in range(stop - start):
                if self.modulation is HeadModulation.TOKEN:
                    mod = cs @ self.mod_weight[:, slot] + self.mod_bias[slot]  # (B, 2H)
                else:
                    mod = self.mod(cs)  # (B, 2H)
                shift, scale = mod.chunk(2, dim=-1)  # (B, H)
                y = hn[:, slot] * (1 + scale) + shift  # (B, H)
                m = torch.as_tensor(self.layout.members[start + row], device=h.device)
                o = y @ w[row, : len(m)].t() + b[row, : len(m)]  # (B, n_t)
                out = out.index_add(1, m, o.to(out.dtype))
                count = count.index_add(0, m, torch.ones_like(m, dtype=count.dtype))
                slot += 1
        return out / count  # (B, G)

    def padding_parameters(self) -> int:
        """Number of padded (always zero-gradient) entries in the stacked weights."""
        total = sum(w.numel() + b.numel() for w, b in zip(self.weight, self.bias, strict=True))
        used = sum(len(m) for m in self.layout.members) * (self.hidden + 1)
        return total - used
