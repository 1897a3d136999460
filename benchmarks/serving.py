"""Serving latency and throughput over HTTP on loopback, beside the in-process predict time (the limit).

    python -m benchmarks.serving [--single 300] [--batches 10] [--clients 16] [--seconds 15]

Needs promoted models (run the pipeline first). Starts a real `scoutless serve` on a free port, then:
- one task per request, sequential: latency p50/p99
- 1,000 tasks per request: latency p50/p99, against the in-process `Predictor.predict` of the same batch
- `--clients` concurrent clients sending one task per request for `--seconds`: requests/s
Writes benchmarks/results/serving.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common import write_results

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = json.loads((REPO / "examples" / "task.json").read_text())["tasks"][0]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([str(Path(sys.executable).with_name("scoutless")), "serve", "--port", str(port)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("scoutless serve did not become ready")


def timed_requests(client: httpx.Client, url: str, body: dict, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.post(f"{url}/predict", json=body)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return times


def concurrent_throughput(url: str, clients: int, seconds: float) -> dict:
    stop = time.monotonic() + seconds
    counts, errors = [0] * clients, [0] * clients

    def work(i: int) -> None:
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < stop:
                ok = client.post(f"{url}/predict", json={"tasks": [EXAMPLE]}).status_code == 200
                counts[i] += ok
                errors[i] += not ok

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {"clients": clients, "seconds": elapsed, "requests": sum(counts), "errors": sum(errors),
            "requests_per_s": sum(counts) / elapsed}


def in_process(batch: list[dict], repeat: int) -> tuple[list[float], list[float]]:
    from scoutless.params import load_params
    from scoutless.paths import resolve
    from scoutless.serving.predictor import Predictor
    from scoutless.serving.schema import TaskSpec

    params = load_params(REPO / "params.yaml")
    predictor = Predictor.from_promoted(resolve(params.paths.promoted, REPO), list(params.targets))
    one = [TaskSpec(**EXAMPLE)]
    many = [TaskSpec(**task) for task in batch]
    predictor.predict(one)
    single, batched = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        predictor.predict(one)
        single.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        predictor.predict(many)
        batched.append((time.perf_counter() - started) * 1000)
    return single, batched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--single", type=int, default=300)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

    batch = [{**EXAMPLE, "jeditaskid": i} for i in range(1000)]
    local_single, local_batch = in_process(batch, args.batches)
    process, url = start_server()
    try:
        with httpx.Client(timeout=60) as client:
            timed_requests(client, url, {"tasks": [EXAMPLE]}, 20)  # warm up
            single = timed_requests(client, url, {"tasks": [EXAMPLE]}, args.single)
            batched = timed_requests(client, url, {"tasks": batch}, args.batches)
        throughput = concurrent_throughput(url, args.clients, args.seconds)
    finally:
        process.terminate()
        process.wait(timeout=30)

    results = {
        "http_single_ms": {"p50": percentile(single, 50), "p99": percentile(single, 99), "n": len(single)},
        "http_batch_1000_ms": {"p50": percentile(batched, 50), "p99": percentile(batched, 99), "n": len(batched)},
        "in_process_single_ms": {"p50": statistics.median(local_single)},
        "in_process_batch_1000_ms": {"p50": statistics.median(local_batch)},
        "throughput": throughput,
    }
    results["batch_http_over_in_process"] = results["http_batch_1000_ms"]["p50"] / results[
        "in_process_batch_1000_ms"]["p50"]
    table = "\n".join([
        f"Serving on loopback ({os.cpu_count()} cores; one `scoutless serve` process)",
        "",
        "| measure | p50 | p99 |",
        "|---|---|---|",
        f"| HTTP, 1 task per request (ms) | {results['http_single_ms']['p50']:.1f} | "
        f"{results['http_single_ms']['p99']:.1f} |",
        f"| in-process, 1 task (ms) | {results['in_process_single_ms']['p50']:.1f} | |",
        f"| HTTP, 1,000 tasks per request (ms) | {results['http_batch_1000_ms']['p50']:.0f} | "
        f"{results['http_batch_1000_ms']['p99']:.0f} |",
        f"| in-process, 1,000 tasks (ms) | {results['in_process_batch_1000_ms']['p50']:.0f} | |",
        f"| **HTTP / in-process, 1,000 tasks** | **{results['batch_http_over_in_process']:.2f}x** | |",
        f"| {args.clients} concurrent clients, 1 task each (requests/s) | {throughput['requests_per_s']:.1f} "
        f"({throughput['errors']} errors) | |",
    ])
    write_results("serving", results, table)
    print(table)


if __name__ == "__main__":
    main()
