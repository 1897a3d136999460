"""Statistics of the values of each group of consecutive rows, in compiled loops run in parallel over the
groups: JEDI's per-task percentiles, max and mean over a task's jobs, exact (benchmarks/aggregate.py measures
them against pandas' per-group quantiles and DuckDB's quantile_cont over the same rows).

A group is rows `bounds[g]:bounds[g + 1]` of the column; NaN (a job that cannot give the quantity) is left
out, and a group with nothing else gives NaN: what pandas' groupby gives, the percentiles to the bit
(interpolated linearly between the order statistics, as numpy's and CoreUtils.percentile are).
Compiled the first time a process uses them (a few seconds), then kept in numba's cache.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, nogil=True, cache=True)
def group_quantiles(values: np.ndarray, bounds: np.ndarray, q: float) -> np.ndarray:
    out = np.empty(bounds.shape[0] - 1)
    for g in numba.prange(bounds.shape[0] - 1):
        known = np.empty(bounds[g + 1] - bounds[g])
        n = 0
        for i in range(bounds[g], bounds[g + 1]):
            if not np.isnan(values[i]):
                known[n] = values[i]
                n += 1
        if n == 0:
            out[g] = np.nan
            continue
        ordered = np.sort(known[:n])
        position = q * (n - 1)
        low = int(np.floor(position))
        high = min(low + 1, n - 1)
        out[g] = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    return out


@numba.njit(parallel=True, nogil=True, cache=True)
def group_max(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    out = np.empty(bounds.shape[0] - 1)
    for g in numba.prange(bounds.shape[0] - 1):
        largest = np.nan
        for i in range(bounds[g], bounds[g + 1]):
            if not np.isnan(values[i]) and (np.isnan(largest) or values[i] > largest):
                largest = values[i]
        out[g] = largest
    return out


@numba.njit(parallel=True, nogil=True, cache=True)
def group_means(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    out = np.empty(bounds.shape[0] - 1)
    for g in numba.prange(bounds.shape[0] - 1):
        total, n = 0.0, 0
        for i in range(bounds[g], bounds[g + 1]):
            if not np.isnan(values[i]):
                total += values[i]
                n += 1
        out[g] = total / n if n else np.nan
    return out


def group_bounds(keys: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(the order that puts equal keys together, ascending: None when they are already; each group's key;
    the bounds of the groups in that order)."""
    order = None
    if len(keys) > 1 and not (keys[1:] >= keys[:-1]).all():
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(keys) else np.zeros(0, np.intp)
    return order, keys[starts], np.append(starts, len(keys))
