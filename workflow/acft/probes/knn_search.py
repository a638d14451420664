"""Exact cosine nearest neighbours for the kNN probe: every search mode returns the same neighbours.

Neighbour order is similarity descending, exactly equal similarities by lower train index. Train clips whose
unit vectors are identical (duplicated clips, silence) are one point of the bank: the search scores each distinct
row once and every copy inherits that similarity, so their order is the train index on any CPU. (Scored
separately, identical rows can differ in the last bit from one bank position to the next when a BLAS blocks the
product differently, and which copy comes first would then depend on the machine.) Similarities of distinct
rows are float64 dot products: two distinct rows within ~1e-15 of each other may rank differently across
machines, which no finite-precision search can exclude.

Search (``search``). Every mode returns the same neighbour sets with exact (float64) similarities; only the
time differs. ``exact`` ranks every (query, train) pair in float64, blockwise so memory stays
O(chunk_size^2). ``float32`` and ``bfloat16`` screen with a matrix product in that precision and certify:

1. b = a per-query bound on |screened - exact cosine| (``screen_error``: the measured rounding of each unit
   vector, the float32 accumulation, the rounding of the product's output);
2. t = the k_max-th largest screened similarity; every true top-k_max neighbour has a screened similarity of
   at least t - 2b (it is at least t - b exactly, and screened within b of that);
3. all train clips screened at >= t - 2b are re-scored exactly and ranked exactly.

Finding them cheaply: the screened row is cut into n_groups groups of GROUP train clips (strided: clips g,
g + n_groups, ...); only the 2 k_max + GROUP_MARGIN groups with the largest maxima are searched, which is
complete when the next group's maximum is below t - 2b (else that query searches its whole row). ``auto`` picks
the faster screening product on this machine (timed once per process: bfloat16 where the CPU has AMX or
AVX512-BF16, float32 elsewhere).
faiss-cpu's exact IndexFlatIP was measured as a search engine: at 20k x 768 train and 5k queries it matched
torch float32 matmul + topk within 5 %, both sgemm-bound, so it is not used.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

GROUP = 32  # train clips per group of the screened row, a power of 2 (the group maxima are searched)
ROW_BLOCK = 512  # rows per step when normalising and rounding (a block of float64 rows stays in L2)
GROUP_MARGIN = 16  # groups searched beyond 2 k_max (see _screened_neighbours)

# screening precision -> (dtype, unit roundoff of the product's output)
SCREENS = {"float32": (torch.float32, 2.0**-24), "bfloat16": (torch.bfloat16, 2.0**-8)}
SEARCHES = ("auto", "exact", *SCREENS)
F32_ROUNDOFF = 2.0**-24  # both screens' products accumulate in float32


def unit_rows(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[N, D] -> float64 [N, D] rows of unit L2 norm; all-zero rows stay zero (cosine 0, as in sklearn)."""
    # One float64 copy, normalised in place: dividing a converted copy into a second one held both at once
    # (1.2 GiB at 100k x 768; bench_knn_memory.py). Always a copy, so the caller's array is never changed.
    x = torch.tensor(np.asarray(x), dtype=torch.float64)
    norms = x.norm(dim=1, keepdim=True)
    return x.div_(torch.where(norms > 0, norms, torch.ones_like(norms)))


def rounding_shift(low: torch.Tensor, unit64: torch.Tensor) -> torch.Tensor:
    """|rounded unit row - exact unit row| per row [N] -> float64 [N] (measured, float64)."""
    return torch.linalg.vector_norm(low.double() - unit64, dim=1)


def screen_error(
    query_shift: torch.Tensor, bank_shift: float, dim: int, largest: torch.Tensor, output_roundoff: float
) -> torch.Tensor:
    """Per-query bound on |screened similarity - exact cosine|, for every train clip -> float64 [Q].

    With q~ = q + d_q and x~ = x + d_x the rounded unit vectors, q~.x~ - q.x = d_q.x + q~.d_x, at most
    |d_q| + (1 + |d_q|) max|d_x| (Cauchy-Schwarz; the |d| are measured by ``rounding_shift``). The float32
    accumulation adds gamma_D |q~||x~|, gamma_D = D u / (1 - D u), u = 2^-24 (Higham, Accuracy and Stability
    of Numerical Algorithms, 2002, eq. 3.5); rounding the output to the screen's precision adds its unit
    roundoff times the output's magnitude, at most ``largest`` [Q]. A slack of 1e-12 covers float64 rounding.

    Args:
        query_shift: |d_q| per query [Q]; bank_shift: max |d_x| over the train clips.
    """
    gamma = dim * F32_ROUNDOFF / (1 - dim * F32_ROUNDOFF)
    inputs = query_shift + (1 + query_shift) * bank_shift
    accumulation = gamma * (1 + query_shift) * (1 + bank_shift)
    return inputs + accumulation + output_roundoff * (1 + 2 * output_roundoff) * largest + 1e-12


@functools.cache
def fastest_screen() -> str:
    """The screening precision whose [1024 x 768] @ [768 x 4096] product is faster here (best of 3 each)."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(1024, 768, generator=generator), torch.randn(4096, 768, generator=generator)
    seconds = {}
    for name, (dtype, _) in SCREENS.items():
        x, y = a.to(dtype), b.to(dtype)
        x @ y.T  # warm-up: kernel selection, page faults
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            x @ y.T
            runs.append(time.perf_counter() - start)
        seconds[name] = min(runs)
    return min(seconds, key=seconds.get)


@dataclass
class Neighbours:
    """The k nearest train clips of every query, for several k.

    Attributes:
        index: k -> long [Q, k] train indices, by (similarity desc, train index asc).
        sim: k -> float64 [Q, k] their exact cosine similarities.
        stats: how they were found: ``search`` (exact, float32, bfloat16), ``rescored_pairs`` (screened pairs
            re-scored exactly), ``whole_rows`` (queries whose whole screened row was searched).
    """

    index: dict[int, torch.Tensor]
    sim: dict[int, torch.Tensor]
    stats: dict = field(default_factory=dict)


def nearest_neighbours(
    train_emb: np.ndarray,
    query_emb: np.ndarray,
    ks: Sequence[int],
    *,
    chunk_size: int = 4096,
    search: str = "auto",
) -> Neighbours:
    """Top-k cosine neighbours of every query in the train bank, for each k in ``ks``.

    Args:
        train_emb: [N, D] memory bank; query_emb: [Q, D].
        ks: neighbour counts, each 1..N.
        chunk_size: similarity blocks hold at most chunk_size^2 (query, train) pairs: memory is O(chunk_size^2).
        search: ``auto``, ``float32``, ``bfloat16`` (certified screens) or ``exact`` (all pairs in float64);
            every mode gives the same neighbours (module docstring).
    """
    if search not in SEARCHES:
        raise ValueError(f"kNN search '{search}' is not one of {list(SEARCHES)}")
    bank, query = torch.as_tensor(np.asarray(train_emb)), torch.as_tensor(np.asarray(query_emb))
    if bank.ndim != 2 or query.ndim != 2 or bank.shape[1] != query.shape[1]:
        raise ValueError(
            f"train embeddings {tuple(bank.shape)} and queries {tuple(query.shape)} must be [N, D]"
        )
    if len(query) == 0:
        raise ValueError("no query embeddings to search for")
    ks = sorted(set(ks))
    if ks[0] < 1 or ks[-1] > len(bank):
        raise ValueError(f"k values {ks} must lie in 1..{len(bank)} (the memory bank size)")
    bank64 = unit_rows(bank)  # normalised once: both the copy detection and the search use these rows
    first_copy = _first_copies(bank64)
    distinct = torch.unique(first_copy)  # sorted: distinct rows keep the order of their first copies
    distinct_ks = sorted({min(k, len(distinct)) for k in ks})
    if len(distinct) == len(bank):  # the common case: no copy of the bank
        found = _search_distinct(bank64, query, distinct_ks, chunk_size, search)
        found.stats["duplicate_train_rows"] = 0
        return found
    found = _search_distinct(bank64[distinct], query, distinct_ks, chunk_size, search)
    found.stats["duplicate_train_rows"] = len(bank) - len(distinct)
    return _expand_copies(found, distinct, first_copy, ks)


def _search_distinct(bank64, query, ks, chunk_size, search) -> Neighbours:
    """Neighbours among the unit rows ``bank64`` [N, D] (float64, no two bitwise equal)."""
    n_groups = -(-len(bank64) // GROUP)
    if search == "exact" or n_groups <= 2 * ks[-1] + GROUP_MARGIN:  # small banks: screening saves nothing
        return _exact_neighbours(bank64, unit_rows(query), ks, chunk_size)
    screen = fastest_screen() if search == "auto" else search
    found = _screened_neighbours(bank64, query, ks, chunk_size, screen)
    if found is None:
        warnings.warn(
            f"{screen} similarities exceed their error bound here; using the exact search", stacklevel=3
        )
        return _exact_neighbours(bank64, unit_rows(query), ks, chunk_size)
    return found


def _first_copies(unit64: torch.Tensor) -> torch.Tensor:
    """For every row [N, D], the index of the first row bitwise equal to it -> long [N] (-0.0 equals 0.0).

    Rows are bucketed by a few columns (cheap), and only rows sharing a bucket are compared whole: 20k x 768
    takes ~5 ms here, against 160 ms for hashing every whole row. Only those columns are copied, not the
    bank (a whole copy was 586 MiB of the kNN search's peak at 100k x 768: bench_knn_memory.py).
    """
    first = np.arange(len(unit64))
    if len(unit64) < 2:
        return torch.from_numpy(first)
    columns = np.ascontiguousarray((unit64[:, :: max(1, unit64.shape[1] // 8)] + 0.0).numpy())  # -0.0 -> 0.0
    keys = columns.view(f"V{columns.shape[1] * 8}").ravel()
    _, bucket, counts = np.unique(keys, return_inverse=True, return_counts=True)
    shared = np.flatnonzero(counts[bucket] > 1)  # rows whose bucket holds others (usually none)
    shared = shared[np.argsort(bucket[shared], kind="stable")]  # grouped by bucket, ascending within each
    for members in np.split(shared, np.cumsum(counts[counts > 1])[:-1]):
        seen: dict[bytes, int] = {}
        rows = (unit64[torch.from_numpy(members)] + 0.0).numpy()  # only this bucket's rows are copied
        for i, row in zip(members, rows, strict=True):  # ascending, so the first copy is met first
            first[i] = seen.setdefault(row.tobytes(), i)
    return torch.from_numpy(first)


def _expand_copies(found: Neighbours, distinct, first_copy, ks) -> Neighbours:
    """Neighbours among the distinct rows -> among all rows, copies ranked by (similarity desc, index asc).

    If a distinct row is not among a query's k_max nearest, k_max distinct rows rank before it, each with a
    first copy of lower index on a tie, so no copy of it is among the k_max nearest of all rows: the k_max
    nearest distinct rows, each with up to k_max of its copies, hold the answer.
    """
    k_max = ks[-1]
    order = first_copy.argsort(stable=True)  # copies of one row together, in index order
    counts = torch.bincount(first_copy, minlength=len(first_copy))[distinct]
    starts = torch.cumsum(counts, 0) - counts
    near = found.index[max(found.index)]  # [Q, m] positions among the distinct rows
    take = counts[near].clamp(max=k_max).reshape(-1)
    pair_rows = torch.arange(len(near)).repeat_interleave(near.shape[1]).repeat_interleave(take)
    pair_group = near.reshape(-1).repeat_interleave(take)
    within = torch.arange(int(take.sum())) - (torch.cumsum(take, 0) - take).repeat_interleave(take)
    ids = order[starts[pair_group] + within]
    sims = found.sim[max(found.sim)].reshape(-1).repeat_interleave(take)
    index, sim = _rank_pairs(pair_rows, ids, sims, len(near), k_max)
    return Neighbours(index={k: index[:, :k] for k in ks}, sim={k: sim[:, :k] for k in ks}, stats=found.stats)


def _exact_neighbours(bank64, query64, ks, chunk_size) -> Neighbours:
    """Every pair in float64, one (query chunk x bank block) at a time, keeping the running top k_max."""
    m = ks[-1]
    sims, index = [], []
    for start in tqdm(
        range(0, len(query64), chunk_size), desc="knn exact", unit="chunk", disable=None, leave=False
    ):
        q = query64[start : start + chunk_size]
        best_v = q.new_empty((len(q), 0))
        best_i = torch.empty((len(q), 0), dtype=torch.long)
        for lo in range(0, len(bank64), chunk_size):
            block = q @ bank64[lo : lo + chunk_size].T
            ids = torch.arange(lo, lo + block.shape[1]).expand(len(q), -1)
            # the running best holds lower indices than this block and is in (value, index) order, the block
            # is in index order: a stable sort by value keeps lower indices first on ties
            values, ids = torch.cat([best_v, block], 1), torch.cat([best_i, ids], 1)
            order = values.argsort(dim=1, descending=True, stable=True)[:, :m]
            best_v, best_i = values.gather(1, order), ids.gather(1, order)
        sims.append(best_v)
        index.append(best_i)
    sims, index = torch.cat(sims), torch.cat(index)
    return Neighbours(
        index={k: index[:, :k] for k in ks}, sim={k: sims[:, :k] for k in ks}, stats={"search": "exact"}
    )


def _screened_neighbours(bank64, query, ks, chunk_size, screen) -> Neighbours | None:
    """Certified screen (module docstring); None when an exact similarity falls outside its bound.

    Group g holds train clips g, g + n_groups, g + 2 n_groups, ...: strided, so the group maxima are an
    elementwise max over GROUP contiguous slices of the screened row (vectorised), not a reduction per group.
    """
    dtype, output_roundoff = SCREENS[screen]
    k_max, n, dim = ks[-1], len(bank64), bank64.shape[1]
    n_groups = -(-n // GROUP)
    bank_low, bank_shift = _rounded_rows(bank64, dtype, n_groups * GROUP)
    n_searched = 2 * k_max + GROUP_MARGIN  # the clips within 2b of the k_max-th are about as many again
    rows_per_chunk = max(1, chunk_size * chunk_size // len(bank_low))
    product = _screen_product(bank_low, rows_per_chunk)
    index, sim = {k: [] for k in ks}, {k: [] for k in ks}
    stats = {"search": screen, "rescored_pairs": 0, "whole_rows": 0}
    chunks = range(0, len(query), rows_per_chunk)
    for start in tqdm(chunks, desc=f"knn {screen} screen", unit="chunk", disable=None, leave=False):
        q64 = unit_rows(query[start : start + rows_per_chunk])
        q_low, q_shift = _rounded_rows(q64, dtype, per_row=True)
        screened = product(q_low)  # [R, GROUP * n_groups]
        screened[:, n:] = -torch.inf
        groups = screened.view(len(q64), GROUP, n_groups)
        top_groups = _max_over_slices(groups).topk(n_searched + 1, dim=1)
        chosen = top_groups.indices[:, None, :n_searched]
        searched = groups.gather(2, chosen.expand(-1, GROUP, -1)).reshape(len(q64), -1)
        t = searched.topk(k_max, dim=1).values[:, -1].double()
        # a first bound with |outputs| <= 1.01 bounds the magnitudes that get compared: t - 2b up to the top
        crude = screen_error(q_shift, bank_shift, dim, torch.full_like(t, 1.01), output_roundoff)
        largest = torch.maximum(top_groups.values[:, 0].double().abs(), t.abs() + 2 * crude)
        bound = screen_error(q_shift, bank_shift, dim, largest, output_roundoff)
        floor = t - 2 * bound
        complete = top_groups.values[:, n_searched].double() < floor
        floor = _float32_below(floor)[:, None]  # compares with the screened values without a float64 copy
        # candidates: (row, train index) of every screened similarity >= floor
        rows, cols = ((searched >= floor) & complete[:, None]).nonzero(as_tuple=True)
        train_ids = (cols // n_searched) * n_groups + chosen[rows, 0, cols % n_searched]
        screened_values = searched[rows, cols]
        incomplete = (~complete).nonzero()[:, 0]
        if len(incomplete):  # search the whole row of these queries
            more_rows, more_ids = (screened[incomplete] >= floor[incomplete]).nonzero(as_tuple=True)
            rows, train_ids = torch.cat([rows, incomplete[more_rows]]), torch.cat([train_ids, more_ids])
            screened_values = torch.cat([screened_values, screened[incomplete[more_rows], more_ids]])
        exact = _pair_cosines(bank64, q64, rows, train_ids)
        stats["rescored_pairs"] += len(rows)
        stats["whole_rows"] += len(incomplete)
        if ((exact - screened_values.double()).abs() > bound[rows]).any():
            return None
        chunk_index, chunk_sim = _rank_pairs(rows, train_ids, exact, len(q64), k_max)
        for k in ks:
            index[k].append(chunk_index[:, :k])
            sim[k].append(chunk_sim[:, :k])
    return Neighbours(
        index={k: torch.cat(v) for k, v in index.items()},
        sim={k: torch.cat(v) for k, v in sim.items()},
        stats=stats,
    )


def _max_over_slices(groups: torch.Tensor) -> torch.Tensor:
    """[R, S, G] -> elementwise max over the S slices [R, G], by halving (S a power of 2; ~1.4x ``amax``)."""
    while groups.shape[1] > 1:
        half = groups.shape[1] // 2
        groups = torch.maximum(groups[:, :half], groups[:, half:])
    return groups[:, 0]


def _screen_product(bank_low: torch.Tensor, rows: int):
    """query rows -> query @ bank_low.T in the bank's precision.

    bfloat16: oneDNN's linear with the bank packed once (AMX tile layout), about 1.5x faster than
    ``F.linear``, which re-packs the bank on every call; ``torch.ops.mkldnn`` is internal to PyTorch (used by
    its compiler), so any failure to pack falls back to ``F.linear``. Both accumulate in float32, which the
    error bound assumes and the certification checks.
    """
    if bank_low.dtype == torch.bfloat16:
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(bank_low, rows)
            return lambda q: torch.ops.mkldnn._linear_pointwise(q, packed, None, "none", [], "")
        except (AttributeError, RuntimeError):
            pass
    return lambda q: F.linear(q, bank_low)  # F.linear's kernel beats q @ bank.T here


def _rounded_rows(unit64: torch.Tensor, dtype, n_rows: int | None = None, per_row: bool = False):
    """Unit rows [N, D] rounded to ``dtype`` (zero rows appended up to ``n_rows``), and the rounding shift
    |rounded - exact|: per row [N] if ``per_row``, else its max (float).

    Works in blocks of ROW_BLOCK rows so each block is rounded and measured while in cache.
    """
    n = len(unit64)
    low = torch.zeros((n_rows or n, unit64.shape[1]), dtype=dtype)
    shift = torch.empty(n, dtype=torch.float64)
    for lo in range(0, n, ROW_BLOCK):
        hi = min(n, lo + ROW_BLOCK)
        low[lo:hi] = unit64[lo:hi]
        shift[lo:hi] = rounding_shift(low[lo:hi], unit64[lo:hi])
    return low, shift if per_row else float(shift.max()) if n else 0.0


def _float32_below(x: torch.Tensor) -> torch.Tensor:
    """float64 -> the largest float32 values <= x (so ``screened >= result`` misses nothing ``>= x`` holds)."""
    rounded = x.float()
    return torch.where(rounded.double() > x, torch.nextafter(rounded, torch.tensor(-torch.inf)), rounded)


def _pair_cosines(bank64, query64, rows, ids) -> torch.Tensor:
    """Exact float64 cosine of the pairs (query ``rows[i]``, train ``ids[i]``) of unit rows -> [P].

    A sampled dense product (``torch.sparse.sampled_addmm``) computes only these dot products, about 10x faster
    than gathering the rows; it needs the pairs in row order.
    """
    order = rows.argsort(stable=True)
    counts = torch.bincount(rows, minlength=len(query64))
    crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        pattern = torch.sparse_csr_tensor(
            crow, ids[order], torch.zeros(len(ids), dtype=torch.float64), size=(len(query64), len(bank64))
        )
        values = torch.sparse.sampled_addmm(pattern, query64, bank64.T, beta=0.0).values()
    out = torch.empty_like(values)
    out[order] = values
    return out


def _rank_pairs(rows, ids, sims, n_rows, m) -> tuple[torch.Tensor, torch.Tensor]:
    """The first m pairs of every row by (sim desc, id asc) -> (ids [n_rows, m], sims [n_rows, m]).

    Every row must hold at least m pairs.
    """
    order = ids.argsort(stable=True)
    order = order[sims[order].argsort(descending=True, stable=True)]
    order = order[rows[order].argsort(stable=True)]
    counts = torch.bincount(rows, minlength=n_rows)
    starts = torch.cumsum(counts, 0) - counts
    take = order[starts[:, None] + torch.arange(m)]
    return ids[take], sims[take]
