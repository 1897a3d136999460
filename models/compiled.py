"""Fitted tree ensembles as flat node arrays, walked by compiled code: the service's hot path.

XGBoost's and scikit-learn's own predict calls cost milliseconds for one row (a DMatrix or input checks,
thread pools), while the trees themselves take microseconds. Here a forest is one set of node arrays, walked
by one function compiled with numba (compiled when the model is loaded: a second or so, once per process).

Each library's rules are reproduced exactly, so the answers are the library's own, bit for bit where the
arithmetic allows (tests/model/test_candidates.py compares them on random inputs):
- XGBoost: inputs as float32; a numeric split goes left when value < condition; a categorical split goes
  right for the categories it lists and left for any other; missing goes to the default child; leaves added
  one tree after another, in float32, onto the base score of their output.
- scikit-learn's HistGradientBoosting: a numeric split goes left when value <= threshold; a categorical split
  goes left for the categories of its left bitset, right for the other categories seen in training, and the
  missing way for an unseen category (or a negative one); leaves added in float64 onto the baseline.
"""

from __future__ import annotations

import json

import numba
import numpy as np

# Category codes a categorical split knows (scikit-learn's bitsets hold 256; scoutless' encoders keep at most
# max_categories <= 255); any other code takes the node's way for an out-of-range category.
CATEGORY_CODES = 256


class TreeEnsemble:
    """Trees as flat node arrays; a leaf is its own left child."""

    def __init__(self, nodes: dict[str, np.ndarray], roots: np.ndarray, outputs: np.ndarray, base: np.ndarray,
                 dtype: type, strict_less: bool):
        self.feature = nodes["feature"]
        self.threshold = nodes["threshold"].astype(dtype)
        self.left, self.right = nodes["left"], nodes["right"]
        self.default_left = nodes["default_left"]
        # per node: its row of `category_left` (-1: numeric split or leaf); a row says, per code (the last:
        # out of range), whether the split sends it left
        self.category_row = nodes["category_row"]
        self.category_left = nodes["category_left"]
        self.value = nodes["value"].astype(dtype)
        self.roots, self.base, self.dtype, self.strict_less = roots, base.astype(dtype), dtype, strict_less
        self.outputs = np.asarray(outputs, dtype=np.intp)
        self.predict(np.zeros((1, int(self.feature.max()) + 1)))   # numba compiles the walk for this dtype now

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n, outputs) raw predictions for the rows of `x` (n, features)."""
        x = np.ascontiguousarray(x, dtype=self.dtype)
        out = np.empty((len(x), len(self.base)), dtype=self.dtype)
        _walk(x, self.feature, self.threshold, self.left, self.right, self.default_left, self.category_row,
              self.category_left, self.value, self.roots, self.outputs, self.base, self.strict_less, out)
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


@numba.njit(cache=False, nogil=True)
def _walk(x, feature, threshold, left, right, default_left, category_row, category_left, value, roots, outputs,
          base, strict_less, out):
    """Every row down every tree; each leaf added to its output in tree order, in the dtype of `out`."""
    codes = category_left.shape[1] - 1
    for r in range(x.shape[0]):
        for k in range(base.shape[0]):
            out[r, k] = base[k]
    # tree by tree, each over every row: a tree's nodes stay in cache; a row still adds its trees in order
    for t in range(roots.shape[0]):
        for r in range(x.shape[0]):
            node = roots[t]
            while left[node] != node:
                v = x[r, feature[node]]
                if np.isnan(v):
                    go_left = default_left[node]
                elif category_row[node] >= 0:
                    code = int(v) if 0 <= v < codes else codes
                    go_left = category_left[category_row[node], code]
                elif strict_less:
                    go_left = v < threshold[node]
                else:
                    go_left = v <= threshold[node]
                node = left[node] if go_left else right[node]
            out[r, outputs[t]] += value[node]
