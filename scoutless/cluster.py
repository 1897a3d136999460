"""The pipeline beyond one process: a Dask cluster for `scoutless run --cluster`.

What is spread over the workers: the extraction (task-id ranges, each worker reading its ranges and their jobs
from the archive and writing Parquet parts), the submission features (task-id ranges of the validated tasks), and
the per-target training (one Prefect task per target, through prefect-dask's DaskTaskRunner). The rest runs in
the flow's process. Without --cluster nothing here is used: one process is the default, and the fastest on one
machine.

A worker runs the same stage functions as the single process, so it needs what they read: the project folder
(params.yaml, data/) at the same path, and the archive. `--cluster local` starts the workers here; for a cluster
of several machines, the project must sit on storage every worker mounts at the same path, and PREFECT_API_URL
must name a Prefect server the workers reach (a flow's temporary server listens on 127.0.0.1 of its machine).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from scoutless.params import PROJECT_DIR_ENV, ClusterParams, project_dir

LOCAL = "local"


class ClusterError(ValueError):
    """--cluster names no cluster this run can use."""


def _prefect_api_url() -> str:
    """The API the flow reports to: PREFECT_API_URL, else the temporary server the flow run started."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url)


def check_spec(spec: str | None) -> None:
    """Refuse a --cluster this run cannot use, before anything starts."""
    if spec is None or spec == LOCAL:
        return
    if not spec.startswith(("tcp://", "tls://")):
        raise ClusterError(f"--cluster takes '{LOCAL}' or a scheduler address tcp://HOST:PORT, not {spec!r}")
    if not os.environ.get("PREFECT_API_URL"):
        raise ClusterError(f"--cluster {spec}: set PREFECT_API_URL to a Prefect server its workers reach (a "
                           "flow run's temporary server listens on this machine's loopback only)")


@contextmanager
def cluster_address(spec: str | None, settings: ClusterParams) -> Iterator[str | None]:
    """The scheduler address of the cluster `spec` names, for as long as the block runs: None (no cluster), 'local'
    (a LocalCluster started here, stopped at the end) or a running scheduler's tcp:// address."""
    check_spec(spec)
    if spec is None:
        yield None
        return
    if spec == LOCAL:
        from distributed import LocalCluster

        # Spawned workers report their task runs to this flow's API and read this project, whatever their cwd.
        # Dask caps a worker's OpenMP threads at one; the trees get as many as they would in this process
        # (HistGradientBoosting has no thread knob, and its sums, so its trees, change with the thread count).
        env = {"PREFECT_API_URL": _prefect_api_url(), PROJECT_DIR_ENV: str(project_dir()),
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count() or 1)}
        with LocalCluster(n_workers=settings.local_workers, threads_per_worker=settings.threads_per_worker,
                          processes=True, dashboard_address=None, env=env) as cluster:
            yield cluster.scheduler_address
        return
    yield spec


@contextmanager
def client_of(address: str) -> Iterator:
    """A Dask client of the scheduler at `address`, closed at the end (the cluster stays up)."""
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        yield client


def workers_of(client) -> int:
    """How many workers the cluster has now (at least one, to split work into)."""
    return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
