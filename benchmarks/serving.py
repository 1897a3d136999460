"""Serving latency and throughput, in process and over HTTP on loopback, with a history snapshot of 20k and
of 1M tasks, side by side in one run.

    python -m benchmarks.serving [--project DIR] [--sizes 20000 1000000] [--single 2000] [--clients 50]
                                 [--seconds 60]

Needs promoted models (run the pipeline first). For each snapshot size, the project's snapshot is enlarged to
that many rows (its own rows, then copies under new keys: the look-ups of real tasks stay those of the project,
the dictionaries and the frame to filter grow) and written as the history artifact of a scratch project that
serves the same promoted models. Then:
- in process, one validated task: the hot path (`Predictor.predict`: Predictor.answer with compiled models,
  then the response model) and the pandas path (`predict_frame`, the library's models); the same for 1,000 of
  the archive's tasks;
- a real `scoutless serve`: one task per request (p50, p99), 1,000 tasks per request, and `--clients`
  concurrent clients sending one task each for `--seconds` (throughput, errors, p99); then the same clients on
  GET /livez, which does no work: the floor the server's HTTP stack sets on this machine. The clients are
  keep-alive connections driven by asyncio (KeepAliveClient), cheap enough that the figures are the server's.
Writes benchmarks/results/serving.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from benchmarks.common import peak_rss_mb, write_results

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = json.loads((REPO / "examples" / "task.json").read_text())["tasks"][0]


def percentiles(values: list[float]) -> dict:
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99)), "n": len(values)}


def archive_tasks(project: Path, n: int) -> list[dict]:
    """`n` of the project's validated tasks as a client sends them (whole floats as counts), else the example."""
    path = project / "data" / "validated" / "tasks.parquet"
    if not path.exists():
        return [{**EXAMPLE, "jeditaskid": i} for i in range(n)]
    tasks = pd.read_parquet(path)
    tasks = tasks.sample(n, replace=len(tasks) < n, random_state=0)
    tasks["creationdate"] = pd.Timestamp.now().strftime("%Y-%m-%dT%H:%M:%S")
    fields = ("jeditaskid", "taskname", "prodsourcelabel", "processingtype", "corecount", "transpath", "transhome",
              "transuses", "campaign", "workinggroup", "gshare", "username", "tasktype", "creationdate",
              "baseramcount", "basewalltime", "cpuefficiency", "total_nfiles", "total_nevents", "n_input_datasets")
    records = []
    for row in tasks[[f for f in fields if f in tasks]].to_dict("records"):
        records.append({k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in row.items()
                        if isinstance(v, str) or not pd.isna(v)})
    return records


def enlarged(snapshot: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The snapshot's rows, then copies of them under new keys, `rows` rows in all."""
    copies = [snapshot]
    total, copy = len(snapshot), 0
    while total < rows:
        copy += 1
        extra = snapshot.iloc[: rows - total].copy()
        extra["key"] = extra["key"] + f"\x1e{copy}"
        if "series" in extra:
            extra["series"] = extra["series"].where(extra["series"].isna(), extra["series"] + f"\x1e{copy}")
        copies.append(extra)
        total += len(extra)
    return pd.concat(copies, ignore_index=True)


def scratch_project(project: Path, snapshot: pd.DataFrame, where: Path) -> Path:
    """A project serving `project`'s promoted models with `snapshot` as its history artifact."""
    from scoutless.features.history_artifact import INFO_FILE
    from scoutless.models.layout import SNAPSHOT_FILE

    where.mkdir(parents=True)
    shutil.copy(project / "params.yaml", where / "params.yaml")
    (where / "artifacts").mkdir()
    (where / "artifacts" / "promoted").symlink_to((project / "artifacts" / "promoted").resolve())
    history = where / "artifacts" / "history"
    history.mkdir()
    snapshot.to_parquet(history / SNAPSHOT_FILE)
    (history / INFO_FILE).write_text(json.dumps({"as_of": str(pd.Timestamp.now()), "snapshot_rows": len(snapshot)}))
    return where


def timed(call, repeat: int) -> list[float]:
    call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def in_process(project: Path, tasks: list[dict], repeat: int) -> dict:
    from scoutless.params import TARGETS
    from scoutless.serving.predictor import Predictor
    from scoutless.serving.schema import TaskSpec

    promoted, history = project / "artifacts" / "promoted", project / "artifacts" / "history"
    specs = [TaskSpec(**task) for task in tasks]   # what the service has after validating a request
    one, many = specs[:1], specs[:1000]
    rss = peak_rss_mb()
    started = time.perf_counter()
    fast = Predictor.from_promoted(promoted, list(TARGETS), history)
    fast.predict(one)   # builds the snapshot's dictionaries
    load_s, load_mb = time.perf_counter() - started, peak_rss_mb() - rss   # the service's own: before the pandas path
    library = Predictor.from_promoted(promoted, list(TARGETS), history, compiled=False)
    rows_one, rows_many = pd.DataFrame([s.row() for s in one]), pd.DataFrame([s.row() for s in many])
    return {
        "load_and_index_s": load_s, "peak_rss_growth_mb": load_mb,
        "hot_single_ms": percentiles(timed(lambda: fast.predict(one), repeat)),
        "pandas_single_ms": percentiles(timed(lambda: library.predict_frame(rows_one), 20)),
        "hot_batch_1000_ms": percentiles(timed(lambda: fast.predict(many), 5)),
        "pandas_batch_1000_ms": percentiles(timed(lambda: library.predict_frame(rows_many), 3)),
    }


def start_server(project: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "SCOUTLESS_PROJECT_DIR": str(project), "BENTOML_DO_NOT_TRACK": "True"}
    process = subprocess.Popen([str(Path(sys.executable).with_name("scoutless")), "serve", "--port", str(port)],
                               cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("scoutless serve did not become ready")


def timed_requests(url: str, body: dict, n: int) -> list[float]:
    """`n` requests one after another on one connection (KeepAliveClient), each one's latency in ms."""
    async def run() -> list[float]:
        connection, times = KeepAliveClient(url, "POST", "/predict", json.dumps(body).encode()), []
        try:
            for _ in range(n):
                started = time.perf_counter()
                if not await connection.send():
                    raise RuntimeError(f"POST /predict failed: {body['tasks'][:1]}")
                times.append((time.perf_counter() - started) * 1000)
        finally:
            connection.close()
        return times

    return asyncio.run(run())


class KeepAliveClient:
    """One keep-alive HTTP/1.1 connection sending one fixed request: a load generator that costs tens of
    microseconds per request, so that on a machine the clients share with the server, the figures are the
    server's (a thread per client with httpx costs about a millisecond of CPU per request, under the GIL)."""

    def __init__(self, url: str, method: str, path: str, body: bytes):
        address = httpx.URL(url)
        self.host, self.port = address.host, address.port
        self.request = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        self.reader = self.writer = None

    async def send(self) -> bool:
        """Send the request, read the whole response; True when its status is 200."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, _, fields = head.decode("latin-1").partition("\r\n")
        length = next((int(line.split(":", 1)[1]) for line in fields.split("\r\n")
                       if line.lower().startswith("content-length:")), None)
        if length is None:
            raise RuntimeError(f"a response without Content-Length: {status}")
        await self.reader.readexactly(length)
        return status.split(" ", 2)[1] == "200"

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


def concurrent_clients(url: str, body: dict | None, clients: int, seconds: float) -> dict:
    """`clients` connections each sending a request as soon as its last one is answered, for `seconds`:
    throughput, errors, latency. `body`: POST it to /predict; None: GET /livez (the server's own floor)."""
    method, path = ("POST", "/predict") if body is not None else ("GET", "/livez")
    payload = json.dumps(body).encode() if body is not None else b""

    async def client(stop: float, latencies: list[float]) -> int:
        connection, errors = KeepAliveClient(url, method, path, payload), 0
        try:
            while time.monotonic() < stop:
                started = time.perf_counter()
                try:
                    ok = await connection.send()
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, RuntimeError):
                    ok = False
                    connection.close()
                latencies.append((time.perf_counter() - started) * 1000)
                errors += not ok
        finally:
            connection.close()
        return errors

    async def run() -> tuple[list[float], int, float]:
        latencies: list[float] = []
        started = time.perf_counter()
        errors = await asyncio.gather(*(client(time.monotonic() + seconds, latencies) for _ in range(clients)))
        return latencies, sum(errors), time.perf_counter() - started

    every, errors, elapsed = asyncio.run(run())
    return {"clients": clients, "seconds": elapsed, "requests": len(every), "errors": errors,
            "requests_per_s": len(every) / elapsed, "latency_ms": percentiles(every)}


def over_http(project: Path, tasks: list[dict], single: int, clients: int, seconds: float) -> dict:
    process, url = start_server(project)
    try:
        timed_requests(url, {"tasks": tasks[:1]}, 50)   # warm up
        one = timed_requests(url, {"tasks": tasks[:1]}, single)
        many = timed_requests(url, {"tasks": tasks[:1000]}, 10)
        return {"single_ms": percentiles(one), "batch_1000_ms": percentiles(many),
                "concurrent": concurrent_clients(url, {"tasks": tasks[:1]}, clients, seconds),
                "concurrent_livez": concurrent_clients(url, None, clients, seconds)}
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=REPO)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 1_000_000])
    parser.add_argument("--single", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    from scoutless.models.layout import SNAPSHOT_FILE
    from scoutless.params import TARGETS

    project = args.project.resolve()
    snapshot = pd.read_parquet(project / "artifacts" / "promoted" / next(iter(TARGETS)) / SNAPSHOT_FILE)
    tasks = archive_tasks(project, 1000)
    results: dict = {"cores": os.cpu_count(), "project_snapshot_rows": len(snapshot), "sizes": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            served = scratch_project(project, enlarged(snapshot, size), Path(scratch) / str(size))
            local = in_process(served, tasks, args.single)
            http = over_http(served, tasks, min(args.single, 1000), args.clients, args.seconds)
            http["batch_http_over_hot"] = http["batch_1000_ms"]["p50"] / local["hot_batch_1000_ms"]["p50"]
            results["sizes"][str(size)] = {"in_process": local, "http": http}
            print(json.dumps({size: results["sizes"][str(size)]}, indent=1), flush=True)

    lines = [f"Serving on loopback ({os.cpu_count()} cores; one `scoutless serve` process; the clients share the "
             f"machine). Snapshot: the project's {len(snapshot):,} rows enlarged.", "",
             "| measure | " + " | ".join(f"{int(s):,}-row snapshot" for s in results["sizes"]) + " |",
             "|---|" + "---|" * len(results["sizes"])]

    def row(label: str, pick) -> None:
        lines.append(f"| {label} | " + " | ".join(pick(r) for r in results["sizes"].values()) + " |")

    row("in process, 1 task, hot path: p50 / p99 (ms)", lambda r: "{p50:.3f} / {p99:.3f}".format(
        **r["in_process"]["hot_single_ms"]))
    row("in process, 1 task, pandas path: p50 (ms)", lambda r: f"{r['in_process']['pandas_single_ms']['p50']:.1f}")
    row("in process, 1,000 tasks, hot path (ms)", lambda r: f"{r['in_process']['hot_batch_1000_ms']['p50']:.0f}")
    row("in process, 1,000 tasks, pandas path (ms)",
        lambda r: f"{r['in_process']['pandas_batch_1000_ms']['p50']:.0f}")
    row("HTTP, 1 task: p50 / p99 (ms)", lambda r: "{p50:.2f} / {p99:.2f}".format(**r["http"]["single_ms"]))
    row("HTTP, 1,000 tasks: p50 (ms)", lambda r: f"{r['http']['batch_1000_ms']['p50']:.0f}")
    row("**HTTP / in process (hot), 1,000 tasks**", lambda r: f"**{r['http']['batch_http_over_hot']:.2f}x**")
    row(f"{args.clients} clients for {args.seconds:.0f} s: requests/s, errors, p99 (ms)",
        lambda r: "{:.0f}, {}, {:.1f}".format(r["http"]["concurrent"]["requests_per_s"],
                                              r["http"]["concurrent"]["errors"],
                                              r["http"]["concurrent"]["latency_ms"]["p99"]))
    row(f"the server's floor, GET /livez, {args.clients} clients: requests/s, p99 (ms)",
        lambda r: "{:.0f}, {:.1f}".format(r["http"]["concurrent_livez"]["requests_per_s"],
                                          r["http"]["concurrent_livez"]["latency_ms"]["p99"]))
    row("hot path: load + snapshot index (s), peak RSS growth (MB)", lambda r: "{:.1f}, {:.0f}".format(
        r["in_process"]["load_and_index_s"], r["in_process"]["peak_rss_growth_mb"]))
    table = "\n".join(lines)
    write_results("serving", results, table)
    print(table)


if __name__ == "__main__":
    main()
