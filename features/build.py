"""The features stage: validated tasks and labels -> one row of submission-time features per task.

Only what is known when a task is submitted goes in. Left out on purpose, though on the task row:
the resource columns and their units (ramcount, cputime, cputimeunit, ... are what the scouts wrote,
i.e. the answer), status and the end/modification times, and what brokerage fills in after submission
(site, cloud, nucleus, resource_type). Where the archive keeps a task's parameter map as submitted
(jedi_taskparams), its cores, base memory, base walltime and cpuefficiency come from there: operators and
JEDI change the row afterwards.
"""

from __future__ import annotations

import math

import pandas as pd

from scoutless.features.history import history_feature_names, history_features, history_table
from scoutless.features.parse import framework, number, processing_type, release, submitted, taskname_tokens, text

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


SUBMISSION_FEATURES = (*CATEGORICAL_FEATURES, *NUMERIC_FEATURES)
_CATEGORICAL = frozenset(CATEGORICAL_FEATURES)
_TEXT_FIELDS = ("prodsourcelabel", "transpath", "campaign", "workinggroup", "gshare", "tasktype", "username")
# The fields of a task the features are read from.
TASK_FIELDS = (*_TEXT_FIELDS, "processingtype", "transhome", "transuses", "taskname", "taskparams", "corecount",
               "baseramcount", "basewalltime", "cpuefficiency", "total_nfiles", "total_nevents", "n_input_datasets")
_TOKENS = ("project", "dsid", "physics_short", "step", "data_format", "n_tags", "e_tag", "s_tag", "r_tag", "p_tag")


def task_features(task: dict) -> dict:
    """Features of one task (a dict of its jedi_tasks fields, plus its input totals) from its own fields only
    (no history): text (None: missing) for the categorical features, floats (NaN: missing) for the numeric
    ones. Missing fields give missing features, never an error: the service calls this on whatever a client
    sends. A value the task's parameter map (`taskparams`) holds is the one it was submitted with, and wins
    over its row's."""
    preset = submitted(task.get("taskparams"))

    def at_submission(column: str) -> float:
        value = preset[column]
        return number(task.get(column)) if math.isnan(value) else value

    cores = at_submission("corecount")
    files, events = number(task.get("total_nfiles")), number(task.get("total_nevents"))
    transhome = text(task.get("transhome"))
    out = {column: text(task.get(column)) for column in _TEXT_FIELDS}
    out |= {
        "processing_type": processing_type(text(task.get("processingtype"))),
        "framework": framework(transhome),
        "corecount_class": "multi" if cores > 1 else "single" if cores == 1 else "any",
        "corecount": cores,
        "total_nfiles": files,
        "total_nevents": events,
        "n_input_datasets": number(task.get("n_input_datasets")),
        "events_per_file": events / files if files > 0 else math.nan,
        "baseramcount": at_submission("baseramcount"),
        "basewalltime": at_submission("basewalltime"),
        "preset_cpuefficiency": at_submission("cpuefficiency"),
    }
    out |= release(transhome, text(task.get("transuses")))
    tokens = taskname_tokens(text(task.get("taskname")))
    out |= {name: tokens[name] for name in _TOKENS}
    return {name: out[name] for name in SUBMISSION_FEATURES}


def submission_features(tasks: pd.DataFrame) -> pd.DataFrame:
    """`task_features` of every task of a frame: categorical columns of pandas' string dtype, numeric ones
    float64."""
    fields = tasks[[column for column in TASK_FIELDS if column in tasks]]
    records = fields.to_dict("records") if len(fields.columns) else [{}] * len(tasks)   # no field: no record
    rows = [task_features(task) for task in records]
    return pd.DataFrame({name: pd.array([row[name] for row in rows],
                                        dtype="string" if name in _CATEGORICAL else "float64")
                         for name in SUBMISSION_FEATURES}, index=tasks.index)


def labels_known_at(tasks: pd.DataFrame) -> pd.Series:
    """When a task's labels became known: its end, never before its creation."""
    created = pd.to_datetime(tasks["creationdate"])
    ended = pd.to_datetime(tasks["endtime"])
    return ended.where(ended >= created, created).where(ended.notna())


def build_features(tasks: pd.DataFrame, labels: pd.DataFrame, targets: list[str],
                   own: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features of every task, the history table). Features carry jeditaskid, creationdate, when the
    labels became known (models.protocol cuts the windows in time from these two), the labels (NaN where
    the task has none yet) and the scout values, beside the model inputs. `own`: the tasks'
    submission_features, row for row, when they were computed elsewhere (by partitions, on a cluster)."""
    tasks = tasks.reset_index(drop=True)
    own = submission_features(tasks) if own is None else own.set_axis(tasks.index)
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
