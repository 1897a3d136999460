"""Parsers of what PanDA's task fields carry: processing type, framework, release, the task name.

Each takes a Series and returns Series/DataFrames; none fails on a value it does not know: an unknown
value becomes "others" or missing, never an error (new kinds of task appear all the time).
"""

from __future__ import annotations

import json
import re

import pandas as pd

# The paper's normalised processing types (PANDA.md); anything else is "others".
PROCESSING_TYPES = (
    "deriv", "jedi-run", "merge", "jedi-athena", "simul", "pile", "evgen", "recon", "reprocessing",
    "athena-trf", "run-evp", "athena-evp",
)
# The paper's frameworks, parsed from the cache name in transhome.
FRAMEWORKS = (
    "Athena", "AthDerivation", "AnalysisBase", "AthAnalysis", "AtlasOffline", "AthGeneration",
    "AthSimulation", "MCProd",
)
OTHERS = "others"
# A release "A.B.C" (what `release` gives) is number C of the series "A.B".
RELEASE_IN_SERIES = re.compile(r"(\d+\.\d+)\.(\d+)")
TAG_LETTERS = ("e", "s", "r", "p", "a", "f", "m", "d")


def processing_type(values: pd.Series) -> pd.Series:
    """Lower-cased processing type if it is one of the paper's; else the first known type it contains
    (e.g. "urgent-deriv" -> "deriv"); else "others"."""
    lowered = values.astype("string").str.strip().str.lower()
    result = pd.Series(OTHERS, index=values.index, dtype="string")
    # Longest names first, so that "jedi-athena" is not taken for "athena-..." and so on.
    for known in sorted(PROCESSING_TYPES, key=len, reverse=True):
        contains = lowered.str.contains(known, regex=False).fillna(False).astype(bool)
        result = result.mask((result == OTHERS) & contains, known)
    exact = lowered.isin(PROCESSING_TYPES).fillna(False).astype(bool)
    return result.mask(exact, lowered)


def framework(transhome: pd.Series) -> pd.Series:
    """The framework part of a cache name ("AthDerivation-21.2.170.0" -> "AthDerivation")."""
    name = transhome.astype("string").str.extract(r"^([A-Za-z]+)", expand=False)
    return name.where(name.isin(FRAMEWORKS).fillna(False).astype(bool), OTHERS).astype("string")


def release(transhome: pd.Series, transuses: pd.Series) -> pd.DataFrame:
    """Release numbers from the cache (else from transuses): major, minor, patch as floats, and the
    release string itself ("21.2.170")."""
    pattern = r"(\d+)\.(\d+)(?:\.(\d+))?"
    parts = transhome.astype("string").str.extract(pattern)
    fallback = transuses.astype("string").str.extract(pattern)
    parts = parts.where(parts[0].notna(), fallback)
    numbers = parts.apply(pd.to_numeric, errors="coerce").astype("float64")
    text = (parts[0] + "." + parts[1] + ("." + parts[2]).fillna("")).astype("string")
    return pd.DataFrame({
        "release_major": numbers[0], "release_minor": numbers[1], "release_patch": numbers[2],
        "release": text,
    }, index=transhome.index)


def release_series(value: str) -> tuple[str, int] | None:
    """("24.0", 13) for "24.0.13"; None for a release without a number in a series ("24.0", "nightly")."""
    match = RELEASE_IN_SERIES.fullmatch(value)
    return (match[1], int(match[2])) if match else None


def release_series_frame(releases: pd.Series) -> pd.DataFrame:
    """`release_series` of many releases: columns series (string) and number (float, NaN if none)."""
    parts = releases.astype("string").str.extract(f"^{RELEASE_IN_SERIES.pattern}$")
    return pd.DataFrame({"series": parts[0].astype("string"), "number": pd.to_numeric(parts[1]).astype("float64")},
                        index=releases.index)


def taskname_tokens(taskname: pd.Series) -> pd.DataFrame:
    """Tokens of the ATLAS nomenclature `<project>.<DSID>.<physics short>.<step>.<format>.<tags>`.

    User and group tasks ("user.<name>. ...") get project "user"/"group", the DSID if their name carries
    one, and no other physics tokens. The tags
    ("e3601_s3126_r10201") give the last tag of each letter (e_tag, s_tag, ...) and their number.
    """
    name = taskname.astype("string").str.strip().str.rstrip("/")
    tokens = name.str.split(".", n=5, expand=True).reindex(columns=range(6)).astype("string")
    personal = tokens[0].isin(["user", "group"]).fillna(False).astype(bool)
    dsid = tokens[1].where(tokens[1].str.fullmatch(r"\d{6,8}").fillna(False).astype(bool))
    # User tasks often name the DSID of their input after the user name ("user.alice.361107.x/").
    personal_dsid = name.str.extract(r"^(?:user|group)\.[^.]+\.(?:.*\.)?(\d{6})(?:\.|$)", expand=False)

    def token(i: int) -> pd.Series:
        return tokens[i].where(~personal).astype("string")

    tags = token(5).str.split(".", n=1).str[0].astype("string")
    out = pd.DataFrame({
        "project": tokens[0].astype("string"),
        "dsid": dsid.where(~personal, personal_dsid).astype("string"),
        "physics_short": token(2),
        "step": token(3),
        "data_format": token(4),
        "n_tags": tags.str.count("_").add(1).astype("float64"),
    }, index=taskname.index)
    for letter in TAG_LETTERS:
        found = tags.str.findall(rf"(?:^|_)({letter}\d+)")
        out[f"{letter}_tag"] = found.str[-1].astype("string")
    return out


# Values a task was submitted with, kept in its parameter map (JEDI_TaskParams.taskParams) while its jedi_tasks
# row may change afterwards: the jedi_tasks column each stands for, and its key in the map.
SUBMITTED_KEYS = {"corecount": "coreCount", "baseramcount": "baseRamCount", "basewalltime": "baseWalltime",
                  "cpuefficiency": "cpuEfficiency"}


def submitted_values(tasks: pd.DataFrame) -> pd.DataFrame:
    """Per task, the SUBMITTED_KEYS values of its parameter map (`taskparams`: JSON text or an already parsed
    dict), by their jedi_tasks names; NaN where there is no map (or no such column), it is not JSON, or the key
    is missing or not a number."""
    def parsed(value) -> dict:
        if isinstance(value, dict):
            return value
        if isinstance(value, str):
            try:
                found = json.loads(value)
            except ValueError:
                return {}
            return found if isinstance(found, dict) else {}
        return {}

    maps = [parsed(value) for value in tasks["taskparams"].tolist()] if "taskparams" in tasks else [{}] * len(tasks)
    return pd.DataFrame({column: pd.to_numeric(pd.Series([m.get(key) for m in maps], index=tasks.index,
                                                         dtype=object), errors="coerce").astype("float64")
                         for column, key in SUBMITTED_KEYS.items()}, index=tasks.index)
