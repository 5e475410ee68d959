"""Patient-grouped, epoch-aware sharding of sample indices across DDP ranks."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from torch.utils.data import Sampler

from rnafm.errors import InputError

if TYPE_CHECKING:
    from rnafm.training.ddp import DistContext

__all__ = ["PatientDistributedSampler"]


class PatientDistributedSampler(Sampler[int]):
    """Shard sample indices across ranks by patient, reshuffled every epoch.

    All samples (slides) of one patient go to the same rank in a given epoch. Patients are
    dealt greedily, largest first (ties in a seeded random order), to the rank holding the
    fewest samples; each rank's list is then shuffled and padded by repeating its own samples,
    so every rank yields the same number of samples and batches. The plan depends only on
    ``seed``, ``epoch`` and the inputs, so every rank computes the same one without talking.

    Parameters
    ----------
    patient_ids
        One patient id per sample of the dataset (``CohortData.patient_ids``).
    indices
        The dataset indices to draw from (default: all).
    ctx, num_replicas, rank
        Where this process sits; ``num_replicas``/``rank`` override ``ctx``; default one process.
    shuffle
        Shuffle patients and samples each epoch (``False`` keeps input order, still balanced).
    seed
        The same on every rank.
    batch_size
        When given, each rank's length is rounded up (or down with ``drop_last``) to whole batches.
    drop_last
        Trim every rank to the shortest one instead of padding (some samples skipped per epoch).
    """

    def __init__(
        self,
        patient_ids: Sequence[str],
        *,
        indices: Sequence[int] | None = None,
        ctx: DistContext | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        batch_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        self.num_replicas = (
            num_replicas if num_replicas is not None else (ctx.world_size if ctx else 1)
        )
        self.rank = rank if rank is not None else (ctx.rank if ctx else 0)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} outside {self.num_replicas} replicas")
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be positive")
        idx = list(range(len(patient_ids))) if indices is None else [int(i) for i in indices]
        groups: dict[str, list[int]] = {}
        for i in idx:
            groups.setdefault(str(patient_ids[i]), []).append(i)
        if len(groups) < self.num_replicas:
            raise InputError(
                f"{len(groups)} patients cannot be split across {self.num_replicas} processes "
                f"(each patient's slides stay on one process); use at most {len(groups)} processes"
            )
        self._groups = [np.asarray(g, dtype=np.int64) for g in groups.values()]
        self.shuffle = shuffle
        self.seed = int(seed)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.epoch = 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Pick the epoch whose shuffle the next iteration uses (call before each epoch)."""
        self.epoch = int(epoch)

    def plan(self, epoch: int | None = None) -> list[np.ndarray]:
        """Every rank's int64 index array for ``epoch`` (default: the current one)."""
        ep = self.epoch if epoch is None else int(epoch)
        if self._cache is not None and self._cache[0] == ep:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, ep])
        n_groups = len(self._groups)
        order = rng.permutation(n_groups) if self.shuffle else np.arange(n_groups)
        sizes = np.array([len(self._groups[g]) for g in order])
        order = order[np.argsort(-sizes, kind="stable")]  # largest first, random among ties
        loads = np.zeros(self.num_replicas, dtype=np.int64)
        shards: list[list[np.ndarray]] = [[] for _ in range(self.num_replicas)]
        for g in order:
            r = int(np.argmin(loads))
            shards[r].append(self._groups[g])
            loads[r] += len(self._groups[g])
        target = int(loads.min() if self.drop_last else loads.max())
        if self.batch_size:
            rounding = math.floor if self.drop_last else math.ceil
            target = int(rounding(target / self.batch_size)) * self.batch_size
        plans = []
        for parts in shards:
            mine = np.concatenate(parts)
            if self.shuffle:
                mine = rng.permutation(mine)
            plans.append(np.resize(mine, target))  # repeats this rank's own samples to pad
        self._cache = (ep, plans)
        return plans

    def __iter__(self) -> Iterator[int]:
        return iter(self.plan()[self.rank].tolist())

    def __len__(self) -> int:
        return len(self.plan()[self.rank])

    def batches(self, batch_size: int | None = None) -> Iterator[list[int]]:
        """This rank's indices in batches (the last may be short unless ``batch_size`` was set)."""
        size = batch_size or self.batch_size
        if not size:
            raise ValueError("give batch_size here or to the sampler")
        mine = self.plan()[self.rank].tolist()
        for start in range(0, len(mine), size):
            yield mine[start : start + size]
