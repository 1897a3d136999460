"""Fitted tree ensembles as one array of packed nodes, walked by compiled code, and the cost-aware request policy as one
compiled loop: the service's hot path.

XGBoost's and scikit-learn's own predict calls cost milliseconds for one row (a DMatrix or input checks,
thread pools), while the trees themselves take microseconds. Here a forest is one array of 16-byte nodes, each
tree depth-first (a walk going left reads on in memory), walked by one function compiled with numba (compiled
when the model is loaded: a second or so, once per process). The six targets' trees hold about 160k nodes, more
than a core's L2 cache: one task's walks wait on memory, and a node of seven arrays cost up to seven cache lines.

Each library's rules are reproduced exactly, so the answers are the library's own, bit for bit where the
arithmetic allows (tests/model/test_candidates.py compares them on random inputs):
- XGBoost: inputs as float32; a numeric split goes left when value < condition; a categorical split goes
  right for the categories it lists and left for any other; missing goes to the default child; leaves added
  one tree after another, in float32, onto the base score of their output.
- scikit-learn's HistGradientBoosting: a numeric split goes left when value <= threshold; a categorical split
  goes left for the categories of its left bitset, right for the other categories seen in training, and the
  missing way for an unseen category (or a negative one); leaves added in float64 onto the baseline.
The cost-aware policy (models.requests.cost_aware_requests: a dozen numpy calls, ~100 us on one task) gives
numpy's values to the bit (tests/model/test_requests.py).
"""

from __future__ import annotations

import json

import numba
import numpy as np

# Category codes a categorical split knows (scikit-learn's bitsets hold 256; scoutless' encoders keep at most
# max_categories <= 255); any other code takes the node's way for an out-of-range category.
CATEGORY_CODES = 256
# A node in 16 bytes, four to a cache line: `value` is a numeric split's threshold, a categorical split's row of
# category_left or a leaf's value; `feature` is a numeric split's feature f, -2 - f for a categorical split
# and LEAF for a leaf; `right` is the right child, negated when missing values go left (no node's right child
# is node 0).
NODE = np.dtype([("value", "float64"), ("feature", "int32"), ("right", "int32")])
LEAF = -1


class TreeEnsemble:
    """Trees as one array of packed nodes (NODE), each tree's nodes in depth-first order."""

    def __init__(self, nodes: dict[str, np.ndarray], roots: np.ndarray, outputs: np.ndarray, base: np.ndarray,
                 dtype: type, strict_less: bool):
        """`nodes`: flat arrays over every tree (a leaf its own left child; a categorical split's row of
        `category_left`, -1 for the others), `roots`: each tree's first node."""
        self.nodes, self.roots = _packed(nodes, roots, dtype)
        # per categorical split, per code (the last: out of range): whether the split sends it left
        self.category_left = nodes["category_left"]
        self.base, self.dtype, self.strict_less = base.astype(dtype), dtype, strict_less
        self.outputs = np.asarray(outputs, dtype=np.intp)
        self.n_features = int(nodes["feature"].max()) + 1
        self.predict(np.zeros((1, self.n_features)))   # numba compiles the walk for this dtype now

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n, outputs) raw predictions for the rows of `x` (n, features)."""
        x = np.ascontiguousarray(x, dtype=self.dtype)
        out = np.empty((len(x), len(self.base)), dtype=self.dtype)
        _walk(x, self.nodes, self.category_left, self.roots, self.outputs, self.base, self.strict_less, out)
        return out.astype("float64")

    @classmethod
    def from_xgboost(cls, booster) -> TreeEnsemble:
        """A booster with one output per tree (XGBoost's default for several quantiles)."""
        model = json.loads(booster.save_raw("json"))["learner"]
        if model["gradient_booster"]["name"] != "gbtree":   # dart weighs its trees, gblinear has none
            raise ValueError(f"an XGBoost {model['gradient_booster']['name']} booster is not compiled")
        trees = model["gradient_booster"]["model"]["trees"]
        if any(int(tree["tree_param"]["size_leaf_vector"]) > 1 for tree in trees):
            raise ValueError("XGBoost trees with vector leaves (multi_output_tree) are not compiled")
        outputs = np.asarray(model["gradient_booster"]["model"]["tree_info"], dtype=np.intp)
        base = np.atleast_1d(np.asarray(json.loads(model["learner_model_param"]["base_score"]), dtype="float32"))
        n_outputs = int(outputs.max()) + 1 if len(outputs) else len(base)
        base = np.broadcast_to(base, (n_outputs,)) if len(base) == 1 else base
        parts, roots, offset, category_rows = [], [], 0, []
        for tree in trees:
            left = np.asarray(tree["left_children"], dtype=np.intp)
            right = np.asarray(tree["right_children"], dtype=np.intp)
            n = len(left)
            leaf = left < 0
            own = np.arange(n)
            row = np.full(n, -1, dtype=np.intp)
            sets = dict(zip(tree.get("categories_nodes", []), zip(tree.get("categories_segments", []),
                                                                  tree.get("categories_sizes", []), strict=True),
                            strict=True))
            for i in np.flatnonzero(np.asarray(tree.get("split_type", [0] * n)) == 1):
                start, size = sets[int(i)]
                goes_left = np.ones(CATEGORY_CODES + 1, dtype=bool)   # unlisted and out-of-range codes: left
                listed = np.asarray(tree["categories"][start:start + size], dtype=np.intp)
                goes_left[listed[listed < CATEGORY_CODES]] = False
                row[i] = len(category_rows)
                category_rows.append(goes_left)
            conditions = np.asarray(tree["split_conditions"], dtype="float32")
            parts.append({
                "feature": np.where(leaf, 0, np.asarray(tree["split_indices"], dtype=np.intp)),
                "threshold": np.where(leaf, 0.0, conditions),
                "left": np.where(leaf, own, left) + offset, "right": np.where(leaf, own, right) + offset,
                "default_left": np.asarray(tree["default_left"], dtype=bool),
                "category_row": row, "value": np.where(leaf, conditions, 0.0),
            })
            roots.append(offset)
            offset += n
        return cls(_stacked(parts, category_rows), np.asarray(roots, dtype=np.intp), outputs,
                   np.asarray(base, dtype="float32"), np.float32, strict_less=True)

    @classmethod
    def from_hist_gradient_boosting(cls, models: list) -> TreeEnsemble:
        """Fitted HistGradientBoostingRegressors (one output each, in order) as one ensemble."""
        parts, roots, outputs, base, offset, category_rows = [], [], [], [], 0, []
        for k, model in enumerate(models):
            known, feature_index = model._bin_mapper.make_known_categories_bitsets()
            base.append(float(np.asarray(model._baseline_prediction).ravel()[0]))
            for (predictor,) in model._predictors:
                nodes = predictor.nodes
                leaf = nodes["is_leaf"].astype(bool)
                own = np.arange(len(nodes))
                missing_left = nodes["missing_go_to_left"].astype(bool)
                row = np.full(len(nodes), -1, dtype=np.intp)
                for i in np.flatnonzero(nodes["is_categorical"].astype(bool) & ~leaf):
                    codes = np.arange(CATEGORY_CODES)
                    seen = _in_bitset(known[feature_index[nodes["feature_idx"][i]]], codes)
                    goes_left = np.append(np.where(seen, _in_bitset(
                        predictor.raw_left_cat_bitsets[nodes["bitset_idx"][i]], codes), missing_left[i]),
                        missing_left[i])   # an unseen or out-of-range category goes the missing way
                    row[i] = len(category_rows)
                    category_rows.append(goes_left)
                parts.append({
                    "feature": np.where(leaf, 0, nodes["feature_idx"].astype(np.intp)),
                    "threshold": np.where(leaf, 0.0, nodes["num_threshold"]),
                    "left": np.where(leaf, own, nodes["left"].astype(np.intp)) + offset,
                    "right": np.where(leaf, own, nodes["right"].astype(np.intp)) + offset,
                    "default_left": missing_left, "category_row": row,
                    "value": np.where(leaf, nodes["value"], 0.0),
                })
                roots.append(offset)
                outputs.append(k)
                offset += len(nodes)
        return cls(_stacked(parts, category_rows), np.asarray(roots, dtype=np.intp), np.asarray(outputs),
                   np.asarray(base, dtype="float64"), np.float64, strict_less=False)


def _in_bitset(bitset: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Whether each code's bit is set in a bitset of 32-bit words."""
    return ((bitset[codes // 32] >> (codes % 32).astype(bitset.dtype)) & 1).astype(bool)


def _stacked(parts: list[dict[str, np.ndarray]], category_rows: list[np.ndarray]) -> dict[str, np.ndarray]:
    nodes = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    nodes["category_left"] = (np.vstack(category_rows) if category_rows
                              else np.zeros((1, CATEGORY_CODES + 1), dtype=bool))
    return nodes


def _packed(nodes: dict[str, np.ndarray], roots: np.ndarray, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """(the nodes as NODE records, each tree depth-first from its root: a split's left child is the node after
    it, so that a walk reads on in memory, its roots). Thresholds and leaf values are those of `dtype`, held
    exactly as float64."""
    left, right = nodes["left"], nodes["right"]
    order, packed_roots = np.full(len(left), -1, dtype=np.intp), np.empty(len(roots), dtype=np.intp)
    position = 0
    for t, root in enumerate(roots.tolist()):
        packed_roots[t] = position
        stack = [root]
        while stack:
            node = stack.pop()
            order[position] = node
            position += 1
            if left[node] != node:
                stack += (right[node], left[node])
    order = order[:position]   # nodes no root reaches are left out
    new_index = np.empty(len(left), dtype=np.intp)
    new_index[order] = np.arange(position)
    leaf = left[order] == order
    category_row = nodes["category_row"][order]
    categorical = category_row >= 0
    feature = nodes["feature"][order]
    split_value = np.where(categorical, category_row, nodes["threshold"][order].astype(dtype).astype("float64"))
    right_child = new_index[right[order]]
    packed = np.empty(position, dtype=NODE)
    packed["feature"] = np.where(leaf, LEAF, np.where(categorical, -2 - feature, feature))
    packed["value"] = np.where(leaf, nodes["value"][order].astype(dtype).astype("float64"), split_value)
    packed["right"] = np.where(nodes["default_left"][order], -right_child, right_child)
    return packed, packed_roots


@numba.njit(cache=False, nogil=True)
def _walk(x, nodes, category_left, roots, outputs, base, strict_less, out):
    """Every row down every tree; each leaf added to its output in tree order, in the dtype of `out` (a
    float32 sum computed in float64 and rounded back is the float32 sum: 53 >= 2 * 24 + 2 bits)."""
    codes = category_left.shape[1] - 1
    for r in range(x.shape[0]):
        for k in range(base.shape[0]):
            out[r, k] = base[k]
    # tree by tree, each over every row: a tree's nodes stay in cache; a row still adds its trees in order
    for t in range(roots.shape[0]):
        for r in range(x.shape[0]):
            node = roots[t]
            split = nodes[node]
            while split.feature != LEAF:
                numeric = split.feature >= 0
                v = x[r, split.feature if numeric else -2 - split.feature]
                if np.isnan(v):
                    go_left = split.right < 0
                elif not numeric:
                    go_left = category_left[int(split.value), int(v) if 0 <= v < codes else codes]
                elif strict_less:
                    go_left = v < split.value
                else:
                    go_left = v <= split.value
                node = node + 1 if go_left else abs(split.right)
                split = nodes[node]
            out[r, outputs[t]] += split.value


def cost_aware_requests(spec, points: np.ndarray, levels, cost: dict) -> tuple[np.ndarray, np.ndarray]:
    """models.requests.cost_aware_requests, the same values, with the expected costs and their least computed
    by one compiled loop per row instead of a dozen numpy calls on a one-row array."""
    unused = cost["unused_mb_hour"] if spec.reserves_memory else cost["unused_limit"]
    asked, failure = np.empty(len(points)), np.empty(len(points))
    _least_expected_cost(np.ascontiguousarray(points, dtype="float64"), np.asarray(levels, dtype="float64"),
                         spec.reserves_memory, float(cost["failed_attempt"]), float(unused), asked, failure)
    return asked, failure


@numba.njit(cache=False, nogil=True)
def _least_expected_cost(points, levels, reserves_memory, failed_attempt, unused_cost, asked, failure):
    """Per row of `points`, the point of least expected cost (models.requests._expected_costs with
    _mass(levels) at the points and 1 - levels beyond them) among levels from the median up, NaN costs left
    out, into `asked`, and 1 - its level into `failure`: the first of equal costs, the first point when none
    counts (numpy's argmin over +inf). The operations are numpy's, in its order (cumulative sums run left to
    right), so the costs are the same to the bit."""
    n_levels = levels.shape[0]
    mass, below, work = np.empty(n_levels), np.empty(n_levels), np.empty(n_levels)
    running, previous = 0.0, 0.0
    for j in range(n_levels):
        mass[j], previous = levels[j] - previous, levels[j]
        running += mass[j]
        below[j] = running
    for r in range(points.shape[0]):
        running = 0.0
        for j in range(n_levels):
            running += mass[j] * points[r, j]
            work[j] = running
        total = work[n_levels - 1] + (1.0 - levels[n_levels - 1]) * points[r, n_levels - 1]
        if not (total >= 1e-300 or np.isnan(total)):   # np.maximum, which keeps a NaN
            total = 1e-300
        least, best = np.inf, 0
        for j in range(n_levels):
            unused = below[j] * points[r, j] - work[j]
            if reserves_memory:
                value = failed_attempt * (1.0 - levels[j]) + unused_cost * unused
            else:
                value = (failed_attempt * (total - work[j]) + unused_cost * unused) / total
            if levels[j] >= 0.5 and not np.isnan(value) and value < least:
                least, best = value, j
        asked[r], failure[r] = points[r, best], 1.0 - levels[best]


# compiled once per process, when models are compiled, rather than at the first request
_least_expected_cost(np.zeros((1, 2)), np.array([0.5, 0.9]), True, 1.0, 1.0, np.empty(1), np.empty(1))
