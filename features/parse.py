"""Parsers of what PanDA's task fields carry: processing type, framework, release, the task name.

Each takes the values of one task and none fails on a value it does not know: an unknown value becomes
"others" or missing (None, NaN), never an error (new kinds of task appear all the time). They work on one
task at a time, with precompiled patterns, so that training (every row of the archive) and the service (one
task, in microseconds) run the very same code.
"""

from __future__ import annotations

import json
import math
import re

import pandas as pd

# The paper's normalised processing types (PANDA.md); anything else is "others".
PROCESSING_TYPES = (
    "deriv", "jedi-run", "merge", "jedi-athena", "simul", "pile", "evgen", "recon", "reprocessing",
    "athena-trf", "run-evp", "athena-evp",
)
# Longest names first, so that "jedi-athena" is not taken for "athena-..." and so on.
_BY_LENGTH = tuple(sorted(PROCESSING_TYPES, key=len, reverse=True))
# The paper's frameworks, parsed from the cache name in transhome.
FRAMEWORKS = frozenset((
    "Athena", "AthDerivation", "AnalysisBase", "AthAnalysis", "AtlasOffline", "AthGeneration",
    "AthSimulation", "MCProd",
))
OTHERS = "others"
# A release "A.B.C" (what `release` gives) is number C of the series "A.B".
RELEASE_IN_SERIES = re.compile(r"(\d+\.\d+)\.(\d+)")
TAG_LETTERS = ("e", "s", "r", "p", "a", "f", "m", "d")
_FRAMEWORK = re.compile(r"[A-Za-z]+")
_RELEASE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_DSID = re.compile(r"\d{6,8}")
# User tasks often name the DSID of their input after the user name ("user.alice.361107.x/").
_PERSONAL_DSID = re.compile(r"(?:user|group)\.[^.]+\.(?:.*\.)?(\d{6})(?:\.|$)")
_TAGS = {letter: re.compile(rf"(?:^|_)({letter}\d+)") for letter in TAG_LETTERS}
NAME_TOKENS = ("project", "dsid", "physics_short", "step", "data_format")


def text(value) -> str | None:
    """A field as text; None when it is missing (None, NaN, pandas' NA)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, str) else str(value)


def number(value) -> float:
    """A field as a float; NaN when it is missing or not a number."""
    if value is None or value is pd.NA:
        return math.nan
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def processing_type(value: str | None) -> str:
    """Lower-cased processing type if it is one of the paper's; else the first known type it contains
    (e.g. "urgent-deriv" -> "deriv"); else "others"."""
    if value is None:
        return OTHERS
    lowered = value.strip().lower()
    if lowered in PROCESSING_TYPES:
        return lowered
    return next((known for known in _BY_LENGTH if known in lowered), OTHERS)


def framework(transhome: str | None) -> str:
    """The framework part of a cache name ("AthDerivation-21.2.170.0" -> "AthDerivation")."""
    match = _FRAMEWORK.match(transhome) if transhome is not None else None
    return match[0] if match and match[0] in FRAMEWORKS else OTHERS


def release(transhome: str | None, transuses: str | None) -> dict:
    """Release numbers from the cache (else from transuses): major, minor, patch as floats, and the
    release string itself ("21.2.170")."""
    match = _RELEASE.search(transhome) if transhome is not None else None
    if match is None and transuses is not None:
        match = _RELEASE.search(transuses)
    if match is None:
        return {"release_major": math.nan, "release_minor": math.nan, "release_patch": math.nan, "release": None}
    major, minor, patch = match.groups()
    return {"release_major": float(major), "release_minor": float(minor),
            "release_patch": math.nan if patch is None else float(patch),
            "release": f"{major}.{minor}" + ("" if patch is None else f".{patch}")}


def release_series(value: str) -> tuple[str, int] | None:
    """("24.0", 13) for "24.0.13"; None for a release without a number in a series ("24.0", "nightly")."""
    match = RELEASE_IN_SERIES.fullmatch(value)
    return (match[1], int(match[2])) if match else None


def release_series_frame(releases: pd.Series) -> pd.DataFrame:
    """`release_series` of many releases: columns series (string) and number (float, NaN if none)."""
    parts = releases.astype("string").str.extract(f"^{RELEASE_IN_SERIES.pattern}$")
    return pd.DataFrame({"series": parts[0].astype("string"), "number": pd.to_numeric(parts[1]).astype("float64")},
                        index=releases.index)


def taskname_tokens(taskname: str | None) -> dict:
    """Tokens of the ATLAS nomenclature `<project>.<DSID>.<physics short>.<step>.<format>.<tags>`.

    User and group tasks ("user.<name>. ...") get project "user"/"group", the DSID if their name carries
    one, and no other physics tokens. The tags
    ("e3601_s3126_r10201") give the last tag of each letter (e_tag, s_tag, ...) and their number.
    """
    out: dict = dict.fromkeys(NAME_TOKENS)
    out |= {"n_tags": math.nan, **{f"{letter}_tag": None for letter in TAG_LETTERS}}
    if taskname is None:
        return out
    name = taskname.strip().rstrip("/")
    tokens = name.split(".", 5)
    tokens += [None] * (6 - len(tokens))
    out["project"] = tokens[0]
    if tokens[0] in ("user", "group"):
        personal = _PERSONAL_DSID.match(name)
        out["dsid"] = personal[1] if personal else None
        return out
    out["dsid"] = tokens[1] if tokens[1] is not None and _DSID.fullmatch(tokens[1]) else None
    out["physics_short"], out["step"], out["data_format"] = tokens[2:5]
    if tokens[5] is not None:
        tags = tokens[5].split(".", 1)[0]
        out["n_tags"] = float(tags.count("_") + 1)
        for letter, pattern in _TAGS.items():
            found = pattern.findall(tags)
            out[f"{letter}_tag"] = found[-1] if found else None
    return out


# Values a task was submitted with, kept in its parameter map (JEDI_TaskParams.taskParams) while its jedi_tasks
# row may change afterwards: the jedi_tasks column each stands for, and its key in the map.
SUBMITTED_KEYS = {"corecount": "coreCount", "baseramcount": "baseRamCount", "basewalltime": "baseWalltime",
                  "cpuefficiency": "cpuEfficiency"}


def submitted(taskparams) -> dict[str, float]:
    """The SUBMITTED_KEYS values of a task's parameter map (JSON text or an already parsed dict), by their
    jedi_tasks names; NaN where there is no map, it is not JSON, or the key is missing or not a number."""
    found = taskparams
    if isinstance(taskparams, str):
        try:
            found = json.loads(taskparams)
        except ValueError:
            found = None
    if not isinstance(found, dict):
        return dict.fromkeys(SUBMITTED_KEYS, math.nan)
    return {column: number(found.get(key)) for column, key in SUBMITTED_KEYS.items()}


def submitted_values(tasks: pd.DataFrame) -> pd.DataFrame:
    """`submitted` of every task of a frame (its `taskparams` column; all NaN without one)."""
    maps = tasks["taskparams"].tolist() if "taskparams" in tasks else [None] * len(tasks)
    return pd.DataFrame([submitted(value) for value in maps], index=tasks.index,
                        columns=list(SUBMITTED_KEYS), dtype="float64")
