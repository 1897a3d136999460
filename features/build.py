"""The features stage: validated tasks and labels -> one row of submission-time features per task.

Only what is known when a task is submitted goes in. Left out on purpose, though on the task row:
the resource columns and their units (ramcount, cputime, cputimeunit, ... are what the scouts wrote,
i.e. the answer), status and the end/modification times, and what brokerage fills in after submission
(site, cloud, nucleus, resource_type). Where the archive keeps a task's parameter map as submitted
(jedi_taskparams), its cores, base memory, base walltime and cpuefficiency come from there: operators and
JEDI change the row afterwards.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scoutless.features.history import history_feature_names, history_features, history_table
from scoutless.features.parse import framework, processing_type, release, submitted_values, taskname_tokens

CATEGORICAL_FEATURES = (
    "prodsourcelabel", "processing_type", "framework", "transpath", "release", "campaign", "workinggroup",
    "gshare", "tasktype", "username", "corecount_class", "project", "dsid", "physics_short", "step",
    "data_format", "e_tag", "s_tag", "r_tag", "p_tag",
)
NUMERIC_FEATURES = (
    "corecount", "total_nfiles", "total_nevents", "n_input_datasets", "events_per_file",
    "release_major", "release_minor", "release_patch", "n_tags", "baseramcount", "basewalltime",
    "preset_cpuefficiency",
)


def _number(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    return pd.to_numeric(frame[column], errors="coerce").astype("float64")


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(pd.NA, index=frame.index, dtype="string")
    return frame[column].astype("string")


def submission_features(tasks: pd.DataFrame) -> pd.DataFrame:
    """Features of each task from its own fields only (no history). Missing fields give missing
    features, never an error: the service calls this on whatever a client sends. A value the task's
    parameter map (`taskparams`) holds is the one it was submitted with, and wins over its row's."""
    submitted = submitted_values(tasks)

    def at_submission(column: str) -> pd.Series:
        return submitted[column].fillna(_number(tasks, column))

    cores = at_submission("corecount")
    files, events = _number(tasks, "total_nfiles"), _number(tasks, "total_nevents")
    out = pd.DataFrame({
        "prodsourcelabel": _text(tasks, "prodsourcelabel"),
        "processing_type": processing_type(_text(tasks, "processingtype")),
        "framework": framework(_text(tasks, "transhome")),
        "transpath": _text(tasks, "transpath"),
        "campaign": _text(tasks, "campaign"),
        "workinggroup": _text(tasks, "workinggroup"),
        "gshare": _text(tasks, "gshare"),
        "tasktype": _text(tasks, "tasktype"),
        "username": _text(tasks, "username"),
        "corecount_class": pd.Series(np.where(cores > 1, "multi", np.where(cores == 1, "single", "any")),
                                     index=tasks.index, dtype="string"),
        "corecount": cores,
        "total_nfiles": files,
        "total_nevents": events,
        "n_input_datasets": _number(tasks, "n_input_datasets"),
        "events_per_file": (events / files).where(files > 0),
        "baseramcount": at_submission("baseramcount"),
        "basewalltime": at_submission("basewalltime"),
        "preset_cpuefficiency": at_submission("cpuefficiency"),
    }, index=tasks.index)
    out = out.join(release(_text(tasks, "transhome"), _text(tasks, "transuses")))
    tokens = taskname_tokens(_text(tasks, "taskname"))
    out = out.join(tokens[["project", "dsid", "physics_short", "step", "data_format", "n_tags",
                           "e_tag", "s_tag", "r_tag", "p_tag"]])
    return out[list(CATEGORICAL_FEATURES + NUMERIC_FEATURES)]


def labels_known_at(tasks: pd.DataFrame) -> pd.Series:
    """When a task's labels became known: its end, never before its creation."""
    created = pd.to_datetime(tasks["creationdate"])
    ended = pd.to_datetime(tasks["endtime"])
    return ended.where(ended >= created, created).where(ended.notna())


def build_features(tasks: pd.DataFrame, labels: pd.DataFrame, targets: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features of every task, the history table). Features carry jeditaskid, creationdate, when the
    labels became known (models.protocol cuts the windows in time from these two), the labels (NaN where
    the task has none yet) and the scout values, beside the model inputs."""
    tasks = tasks.reset_index(drop=True)
    own = submission_features(tasks)
    labelled = tasks[["jeditaskid"]].merge(labels[["jeditaskid", *targets]], on="jeditaskid", how="left")
    events = pd.concat([tasks[["jeditaskid"]], own, labelled[targets]], axis=1)
    events["available_at"] = labels_known_at(tasks)
    events = events[labelled[targets].notna().any(axis=1)]
    table = history_table(events, targets)
    has_label = labelled[targets].notna().any(axis=1)
    base = pd.DataFrame({"jeditaskid": tasks["jeditaskid"], "creationdate": pd.to_datetime(tasks["creationdate"]),
                         "labels_known_at": labels_known_at(tasks).where(has_label)})
    scouts = tasks[[c for c in tasks.columns if c.startswith("scout_")]]
    features = pd.concat(
        [base, own, history_features(tasks.assign(**own), table, targets),
         labelled[targets].add_prefix("label_"), scouts],
        axis=1,
    )
    return features, table


def feature_columns(targets: list[str]) -> list[str]:
    """The model inputs: submission features and history features."""
    return [*CATEGORICAL_FEATURES, *NUMERIC_FEATURES, *history_feature_names(targets)]
