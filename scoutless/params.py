"""Typed parameters, loaded from params.yaml.

Every section forbids unknown keys, so a misspelt knob (in the file or in `dvc exp run -S`) is an error
that names it instead of being silently ignored.
"""

from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ARCHIVE_URL_ENV = "SCOUTLESS_ARCHIVE_URL"
# The archive's password lives only here (or in archive.password_file), never in params, flow parameters,
# logs or DVC's records: a URL given with one is split on the way in (load_params).
ARCHIVE_PASSWORD_ENV = "SCOUTLESS_ARCHIVE_PASSWORD"
PROJECT_DIR_ENV = "SCOUTLESS_PROJECT_DIR"
# The archive that ships with the project: simulated on first use (`scoutless run`).
EMBEDDED_ARCHIVE_URL = "sqlite:///data/archive/panda.sqlite"

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Percentile = Annotated[float, Field(gt=0.0, le=100.0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArchiveParams(Section):
    url: str = EMBEDDED_ARCHIVE_URL
    schema_name: str | None = Field(default=None, alias="schema")
    archive_schema: str | None = None
    job_tables: list[str] = ["jobsarchived4", "jobsarchived"]
    # A file holding the archive's password (relative to the project; keep it out of git and DVC), read when
    # $SCOUTLESS_ARCHIVE_PASSWORD is unset.
    password_file: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("url")
    @classmethod
    def no_password(cls, url: str) -> str:
        if _password_of(url):
            raise ValueError(f"holds a password, which DVC would record in dvc.lock: remove it and set "
                             f"${ARCHIVE_PASSWORD_ENV} or archive.password_file")
        return url

    @field_validator("job_tables")
    @classmethod
    def known_job_tables(cls, tables: list[str]) -> list[str]:
        unknown = sorted(set(tables) - {"jobsarchived4", "jobsarchived"})
        if unknown or not tables:
            raise ValueError(f"job_tables must name jobsarchived4 and/or jobsarchived, got {tables}")
        return tables


class ShiftParams(Section):
    """How a shifted window differs from the world before it."""

    # A new release of every current software series, published as the window opens, with this factor on
    # the memory its jobs need (1: as much as the release before it); the share of tasks that use it.
    new_release_memory: Annotated[float, Field(gt=0)] = 1.5
    new_release_share: Fraction = 0.8
    # The share of Run-3 (mc21/mc23, data22+) tasks: a new campaign mix. null: the trend continues.
    run3_share: Fraction | None = 0.1


class WindowParams(Section):
    """A later window of tasks appended to a simulated archive, from the same world."""

    days: Annotated[int, Field(gt=0)] = 30
    tasks: Annotated[int, Field(gt=0)] = 1500
    shift: ShiftParams = ShiftParams()


class SimulateParams(Section):
    tasks: Annotated[int, Field(gt=0)] = 20000
    seed: int = 20260101
    world_seed: int | None = None     # the world and its hidden hyper-parameters; None: the reference world
    start: date = date(2024, 1, 1)
    days: Annotated[int, Field(gt=0)] = 730
    junk_fraction: Fraction = 0.01
    window: WindowParams = WindowParams()


class JediParams(Section):
    """JEDI's constants in the scout formulas (panda-server, task_utils_module.getScoutJobData_JEDI)."""

    ramcount_percentile: Percentile = 75
    ramcount_margin: Annotated[float, Field(ge=0)] = 0.10
    ramcount_min_mb: Annotated[float, Field(ge=0)] = 0
    cputime_percentile: Percentile = 95
    cputime_scale: Annotated[float, Field(gt=0)] = 1.5
    cputime_min_events_per_core: Annotated[int, Field(ge=0)] = 10
    long_job_seconds: Annotated[float, Field(ge=0)] = 21600
    outdisk_percentile: Percentile = 75
    outdisk_min_events: Annotated[int, Field(ge=0)] = 10
    outdisk_cap_kb: Annotated[float, Field(gt=0)] = 10240
    corepower_hs06: Annotated[float, Field(gt=0)] = 10.0
    cpuefficiency_if_null: Annotated[float, Field(gt=0, le=100)] = 100


class ExtractParams(Section):
    chunk_tasks: Annotated[int, Field(gt=0)] = 5000
    retries: Annotated[int, Field(ge=0)] = 3
    retry_wait_seconds: Annotated[float, Field(ge=0)] = 2.0
    # Pilot error codes that mean the payload ran out of memory (1212, 1223, 1235 in the pilot).
    oom_pilot_errors: list[int] = [1212, 1223, 1235]
    jedi: JediParams = JediParams()


Range = tuple[float | None, float | None]
Target = Literal["ramcount", "cputime", "cpuefficiency", "iointensity", "outdiskcount", "workdiskcount"]
TARGETS: tuple[str, ...] = get_args(Target)


class ValidationParams(Section):
    max_bad_fraction: Fraction = 0.05
    on_too_many_bad: Literal["fail", "warn"] = "fail"
    max_corecount: Annotated[int, Field(gt=0)] = 256
    max_job_wall_s: Annotated[float, Field(gt=0)] = 30 * 86400
    label_ranges: dict[str, Range] = {}
    job_ranges: dict[str, Range] = {}

    @field_validator("label_ranges")
    @classmethod
    def known_targets(cls, ranges: dict[str, Range]) -> dict[str, Range]:
        unknown = sorted(set(ranges) - set(TARGETS))
        if unknown:
            raise ValueError(f"unknown target(s) {unknown}; targets are {list(TARGETS)}")
        return ranges


class PathParams(Section):
    """Where each stage writes, relative to the project folder."""

    archive_state: Path = Path("data/archive/state.json")   # what the archive held when last checked
    raw: Path = Path("data/raw")
    validated: Path = Path("data/validated")
    quarantine: Path = Path("data/quarantine")
    features: Path = Path("data/features")
    validation_reports: Path = Path("reports/validation")
    drift_reports: Path = Path("reports/drift")   # Evidently HTML pages; drift.json beside the folder
    replay_reports: Path = Path("reports/replay")   # the replay's page and plots; replay.json beside the folder
    models: Path = Path("artifacts/models")
    promoted: Path = Path("artifacts/promoted")
    history: Path = Path("artifacts/history")       # the history snapshot the service reads, as of when
    artifacts: Path = Path("artifacts")
    bentoml_home: Path = Path(".bentoml")


class SplitParams(Section):
    """Three windows in time before and after an origin (models.protocol): train | validation | test."""

    # The pipeline's "now": null is the archive's newest known time; a date replays the pipeline as of then.
    as_of: datetime | None = None
    validation_days: Annotated[float, Field(gt=0)] = 60   # calibration, selection
    test_days: Annotated[float, Field(gt=0)] = 60         # reported, and the gate's comparison


QuantileName = Literal["q50", "q90", "q95"]
Candidate = Literal["default", "scout", "history", "mlp", "hgb", "xgboost"]


class HistoryParams(Section):
    min_tasks: Annotated[int, Field(ge=1)] = 10
    # Kinds of task, finest first: a task takes the quantiles of the finest kind with min_tasks tasks.
    groups: list[list[str]] = [
        ["processing_type", "transpath", "release", "corecount_class"],
        ["processing_type", "transpath", "corecount_class"],
        ["processing_type", "corecount_class"],
        ["processing_type"],
    ]


class HGBParams(Section):
    max_iter: Annotated[int, Field(gt=0)] = 150
    learning_rate: Annotated[float, Field(gt=0)] = 0.1
    max_leaf_nodes: Annotated[int, Field(gt=1)] = 31
    min_samples_leaf: Annotated[int, Field(gt=0)] = 20
    l2_regularization: Annotated[float, Field(ge=0)] = 1.0
    # stop adding trees once the validation window's quantile loss has not improved for n_iter_no_change
    early_stopping: bool = True
    n_iter_no_change: Annotated[int, Field(gt=0)] = 10


class XGBoostParams(Section):
    n_estimators: Annotated[int, Field(gt=0)] = 150
    max_depth: Annotated[int, Field(gt=0)] = 6
    learning_rate: Annotated[float, Field(gt=0)] = 0.1
    subsample: Annotated[float, Field(gt=0, le=1)] = 0.8
    colsample_bytree: Annotated[float, Field(gt=0, le=1)] = 1.0
    min_child_weight: Annotated[float, Field(ge=0)] = 50
    reg_lambda: Annotated[float, Field(ge=0)] = 1.0
    nthread: Annotated[int, Field(ge=0)] = 2
    # stop once the validation window's mean quantile loss has not improved for this many rounds (null: never)
    early_stopping_rounds: Annotated[int, Field(gt=0)] | None = 10


class MLPParams(Section):
    hidden_layer_sizes: list[Annotated[int, Field(gt=0)]] = [64, 32]
    alpha: Annotated[float, Field(ge=0)] = 1e-4
    learning_rate_init: Annotated[float, Field(gt=0)] = 1e-3
    max_iter: Annotated[int, Field(gt=0)] = 300
    early_stopping: bool = True


class CalibrationParams(Section):
    """Conformal offsets on the validation window (models.calibration)."""

    # Mondrian: a value of this column with at least min_group_tasks validation tasks gets offsets of its
    # own; the rest share the overall ones. null: overall offsets only.
    group: str | None = "processing_type"
    min_group_tasks: Annotated[int, Field(gt=0)] = 100
    # Newer validation tasks weigh more (weight halves every half_life_days back from the origin), so the
    # offsets follow drift. null: every task weighs alike.
    half_life_days: Annotated[float, Field(gt=0)] | None = 30


class ScalingParams(Section):
    """What the learned candidates do with a large fit window (the tasks whose labels they learn from)."""

    # a candidate is not trained for a target whose fit window holds more tasks than this; its card says so
    skip_above_tasks: dict[Candidate, Annotated[int, Field(gt=0)]] = {}
    # a candidate learns from the newest this many tasks of a larger fit window
    max_fit_tasks: dict[Candidate, Annotated[int, Field(gt=0)]] = {}


class TrainParams(Section):
    candidates: list[Candidate] = ["default", "scout", "history", "mlp", "hgb", "xgboost"]
    # The label quantile selection scores and the job-level request builds on, per target.
    request_quantile: dict[Target, QuantileName] = {}
    # What a task gets with no estimate at all; null where JEDI has no value to offer.
    default_values: dict[Target, float | None] = {}
    max_categories: Annotated[int, Field(ge=2, le=255)] = 255
    calibration: CalibrationParams = CalibrationParams()
    history: HistoryParams = HistoryParams()
    hgb: HGBParams = HGBParams()
    xgboost: XGBoostParams = XGBoostParams()
    mlp: MLPParams = MLPParams()
    scaling: ScalingParams = ScalingParams()


class RequestCosts(Section):
    """What a request costs, per core-hour of the job it is for (models.requests.cost_aware_requests)."""

    # A failed attempt: the run it burned (1: all of it, as an out-of-memory or walltime kill does) plus the
    # delay of its retry and the larger request the retry runs at.
    failed_attempt: Annotated[float, Field(gt=0)] = 1.5
    # Memory reserved but unused, per MB-hour per core (1/2000: a core's slot holds 2000 MB).
    unused_mb_hour: Annotated[float, Field(ge=0)] = 1 / 2000
    # Every other limit (walltime, disk, I/O) reserves nothing while the job runs, but a larger one narrows the
    # queues and sites a job can go to: the part beyond the need costs this per the same amount of need (0.02:
    # a walltime limit twice the job's run costs 2 % of the run). A job's run grows with its need here.
    unused_limit: Annotated[float, Field(ge=0)] = 0.02


class RequestParams(Section):
    """What the served request controls (models.requests)."""

    # quantile: the job-level (1 - max_job_failure) quantile of every task; cost-aware: per task, the request
    # of least expected cost under `cost` from the task's job-level predictive distribution.
    policy: Literal["quantile", "cost-aware"] = "cost-aware"
    # The share of a task's finished jobs the quantile request may leave above it (they fail, are retried).
    max_job_failure: Annotated[float, Field(gt=0, lt=1)] = 0.02
    cost: RequestCosts = RequestCosts()


class SelectParams(Section):
    metric: str = "pinball_request"
    # The winner replaces the promoted configuration only if it does at least as well on the test window
    # (both trained by the same protocol without it); otherwise the stage fails (or only warns and keeps
    # the promoted configuration, refit as of now).
    gate: Literal["fail", "warn"] = "warn"


class RetrainRule(Section):
    """When the drift check calls for retraining: either condition is enough."""

    # The share of monitored features whose distribution drifted (Evidently's per-column tests).
    drifted_features_share: Fraction = 0.5
    # A target's mean error on the labelled current tasks above its reference error by this relative margin
    # (0.25: 25 % worse), counted only with at least min_labelled tasks.
    error_margin: Annotated[float, Field(ge=0)] = 0.25
    min_labelled: Annotated[int, Field(gt=0)] = 50


class MonitorParams(Section):
    # The newest tasks created after the promoted models' training window, compared with that window.
    current_days: Annotated[float, Field(gt=0)] = 30
    # Only the newest part of the training window is the reference (null: all of it): a model is expected
    # to hold for what it saw last, and old history trends (releases, campaigns) would always look drifted.
    reference_days: Annotated[float, Field(gt=0)] | None = 90
    # Fewer current tasks than this: no verdict (the tests have no power), and no retraining.
    min_tasks: Annotated[int, Field(gt=0)] = 100
    # Evidently's per-column drift tests; null: its defaults by column type and size (K-S / chi-squared up
    # to 1000 reference rows, else Wasserstein / Jensen-Shannon distance).
    num_method: str | None = "wasserstein"
    cat_method: str | None = "jensenshannon"
    num_threshold: Annotated[float, Field(gt=0)] | None = 0.1
    cat_threshold: Annotated[float, Field(gt=0)] | None = 0.1
    retrain: RetrainRule = RetrainRule()


class ScheduleParams(Section):
    """Cron strings (UTC) of the Prefect deployments that `scoutless deploy` serves."""

    retrain: str = "0 2 * * *"      # the whole pipeline, nightly
    drift_check: str = "15 * * * *"  # extract the newest tasks and check drift, hourly
    timezone: str = "UTC"


class FlowParams(Section):
    train_workers: Annotated[int, Field(gt=0)] = 2   # targets trained at once by the pipeline flow
    # After a scheduled run, record its outputs in dvc.lock (`dvc commit`) and push them to the DVC remote.
    version_with_dvc: bool = True
    schedules: ScheduleParams = ScheduleParams()


class ClusterParams(Section):
    """`scoutless run --cluster`: the Dask cluster the extraction, the features and the per-target training are
    spread over (scoutless.cluster)."""

    local_workers: Annotated[int, Field(gt=0)] = 2      # worker processes of `--cluster local`
    threads_per_worker: Annotated[int, Field(gt=0)] = 1  # each works one partition or one target at a time
    # Task-id ranges (extract.chunk_tasks tasks each) per unit of work sent to a worker: larger, fewer round
    # trips; smaller, the work spreads more evenly.
    ranges_per_part: Annotated[int, Field(gt=0)] = 4
    feature_partitions_per_worker: Annotated[int, Field(gt=0)] = 2


class BacktestParams(Section):
    """The rolling-origin backtest (models.backtest): the whole pipeline replayed at several origins."""

    origins: Annotated[int, Field(ge=1)] = 4   # origins, split.test_days apart, ending one test window ago
    candidates: list[Candidate] | None = None  # null: train.candidates
    min_group_tasks: Annotated[int, Field(gt=0)] = 30  # a processing type is reported with this many tasks


ReplayPolicy = Literal["default", "scouts", "history", "model", "cost-aware"]
# What a job that ran out of memory is retried at: JEDI's increase_memory ladder, the Kubernetes vertical pod
# autoscaler's rule (+20 %, at least +100 MB), or scoutless' advice from the task's predictive distribution
RetryRule = Literal["ladder", "vpa", "advice"]


class ReplayParams(Section):
    """The replay (models.replay): the backtest's tasks, their real jobs run again under each policy's
    requests, with JEDI's retry rules."""

    policies: list[ReplayPolicy] = ["default", "scouts", "history", "model", "cost-aware"]
    scout_jobs: Annotated[int, Field(gt=0)] = 10   # JEDI's nChunksForScout: the jobs that run first
    # JEDI's increase_memory: a job out of memory is retried at the next rung (MB per core) above its request
    memory_ladder_mb: list[Annotated[float, Field(gt=0)]] = [1000, 2000, 3000, 4000, 6000, 8000]
    # Every policy retries a job out of memory by JEDI's ladder; `retry_policy` is also replayed with each of
    # `retry_rules`, to compare them on the same requests
    retry_policy: ReplayPolicy = "cost-aware"
    retry_rules: list[RetryRule] = ["ladder", "vpa", "advice"]
    # ... and once more than this share of a task's jobs were bumped, the task's ramcount moves a rung up
    task_bump_share: Annotated[float, Field(gt=0, le=1)] = 0.3
    # A job past its walltime limit is killed there and retried with the limit times this
    walltime_retry_factor: Annotated[float, Field(gt=1)] = 1.5
    max_attempts: Annotated[int, Field(ge=1)] = 8   # a job failing this often is lost
    # The share of its wall time an attempt that runs out of memory has run when it is killed
    oom_wall_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    mb_per_core_slot: Annotated[float, Field(gt=0)] = 2000   # memory slack in core-hours: MB-hours / this
    # The memory limit per core of each site a task may be brokered to: the reach of a request is the share
    # of them it fits
    site_memory_mb_per_core: list[Annotated[float, Field(gt=0)]] = [2000] * 12 + [2500] * 3 + [3000] * 3 + [4000] * 2
    min_group_tasks: Annotated[int, Field(gt=0)] = 30   # a processing type is reported with this many tasks

    @field_validator("memory_ladder_mb")
    @classmethod
    def _rising(cls, ladder: list[float]) -> list[float]:
        if not ladder or sorted(ladder) != ladder or len(set(ladder)) != len(ladder):
            raise ValueError("the memory ladder must be rising rungs, e.g. [1000, 2000, 3000]")
        return ladder


class ServingParams(Section):
    max_batch: Annotated[int, Field(gt=0)] = 1000   # tasks in one POST /predict; more is a 400
    # bytes of one POST /predict body, refused with a 413 before it is parsed (a batch of max_batch whole
    # jedi_tasks rows is well under this)
    max_request_bytes: Annotated[int, Field(gt=0)] = 8 * 2**20
    port: Annotated[int, Field(gt=0, lt=65536)] = 3000
    # worker processes of `scoutless serve`, each with the models (null: one per core)
    workers: Annotated[int, Field(gt=0)] | None = None
    # BentoML's log line per request: off, it leaves a worker a quarter more requests per second (1,722 against
    # 1,313 for 50 clients here); /metrics still counts every request by status and latency, and a refused
    # request is logged by the request gate either way
    access_log: bool = False


class Params(Section):
    archive: ArchiveParams = ArchiveParams()
    simulate: SimulateParams = SimulateParams()
    extract: ExtractParams = ExtractParams()
    validation: ValidationParams = ValidationParams()
    paths: PathParams = PathParams()
    split: SplitParams = SplitParams()
    targets: list[Target] = list(TARGETS)
    train: TrainParams = TrainParams()
    request: RequestParams = RequestParams()
    select: SelectParams = SelectParams()
    backtest: BacktestParams = BacktestParams()
    replay: ReplayParams = ReplayParams()
    monitor: MonitorParams = MonitorParams()
    flows: FlowParams = FlowParams()
    cluster: ClusterParams = ClusterParams()
    serving: ServingParams = ServingParams()


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or names a knob that does not exist."""


def project_dir() -> Path:
    """The folder holding params.yaml: $SCOUTLESS_PROJECT_DIR, else the nearest parent of the cwd."""
    if env := os.environ.get(PROJECT_DIR_ENV):
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file():
            return folder
    raise ParamsError(f"no params.yaml in {here} or its parents (set {PROJECT_DIR_ENV})")


def _password_of(url: str) -> str | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(url).password
    except ArgumentError:   # not a SQLAlchemy URL (a bigpanda .json dump): no password in it
        return None
    return None if password is None else str(password)


def split_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password or None)."""
    from sqlalchemy.engine import make_url

    password = _password_of(url)
    if password is None:
        return url, None
    return make_url(url)._replace(password=None).render_as_string(hide_password=False), password


def archive_password(params: Params) -> str | None:
    """The archive's password: $SCOUTLESS_ARCHIVE_PASSWORD, else archive.password_file, else none."""
    if os.environ.get(ARCHIVE_PASSWORD_ENV):
        return os.environ[ARCHIVE_PASSWORD_ENV]
    if params.archive.password_file:
        path = Path(params.archive.password_file)
        path = path if path.is_absolute() else project_dir() / path
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ParamsError(f"archive.password_file: cannot read {path}: {exc.strerror}") from exc
    return None


def load_params(path: Path | None = None, archive_url: str | None = None) -> Params:
    """Read and validate params.yaml; the archive URL comes from the argument, then the env, then the file."""
    path = path or project_dir() / "params.yaml"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ParamsError(f"cannot read {path}: {exc}") from exc
    url = archive_url or os.environ.get(ARCHIVE_URL_ENV)
    if url:
        url, password = split_password(url)
        if password is not None:   # from the command line or the environment: kept in the environment only
            os.environ[ARCHIVE_PASSWORD_ENV] = password
        raw.setdefault("archive", {})["url"] = url
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ParamsError(f"{path}: {problems}") from exc
