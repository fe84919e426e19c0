"""Every benchmark runs end to end at a tiny size, so none can break unseen.

No figure is asserted (timings belong to the benchmarks, not the tests): each script must
finish, print the machine and its command, and print its table. Where a benchmark
checks correctness on the way (the drain's ledger: nothing sent twice), that is asserted.

They run CONCURRENT at a time, the longest first: most of a tiny run is fixed-length load
steps and process starts, and nothing here reads a figure, so sharing the cores changes
no outcome; in turn they took ~260 s of CI's 20 minutes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "sync_path": (["--requests", "20", "--concurrency", "2", "--max-seconds", "30"],
                  r"gateway sqlite / baseline: req/s x"),
    "outage_throughput": (["--requests", "20", "--concurrency", "2", "--max-seconds", "30"],
                          r"queued sqlite / baseline: req/s x"),
    "fail_fast": (["--requests", "20", "--concurrency", "2", "--serial-requests", "10",
                   "--open-rates", "50", "--open-seconds", "1", "--max-seconds", "30"],
                  r"-> 202 / baseline: p50 x"),
    "drain": (["--claims", "30", "--limited-claims", "30", "--max-seconds", "60"],
              r"ledger \(b unlimited\): 30 keys for 30 settled of 30 queued, "
              r"0 sent more than once -> ok"),
    "queue_growth": (["--small", "50", "--big", "100", "--requests", "20", "--concurrency",
                      "2", "--max-seconds", "30"], r"lease query plan at 100: "),
    "receipt_cost": (["--requests", "20", "--concurrency", "2", "--rounds", "1",
                      "--max-seconds", "30"], r"cost per pair \(1 - card/none\): "),
    "outage_detection": (["--runs", "1", "--cap", "15"],
                         r"b no traffic \(probe only\)\s+med\s+\d"),
    "board_at_scale": (["--claims", "100", "--requests", "10", "--batch", "40",
                        "--max-seconds", "30"], r"target: p99 of GET /v1/operators "),
    "queue_depth_cost": (["--seconds", "0.5", "--rounds", "2", "--group", "4"],
                         r"sqlite on / off: claims/s x\d"),
    "operator_call": (["--calls", "20", "--rounds", "1"],
                      r"OperatorClient, guarded / aiohttp alone: x\d"),
    "history_queries": (["--claims", "600", "--small", "300", "--repeats", "2"],
                        r"the largest query ratio x\d"),
    "audit_view": (["--entries", "300", "--new", "20", "--head-every", "100", "--repeats", "1"],
                   r"a view, 20 entries new since\s+\d"),
    "intake_split": (["--claims", "64", "--rounds", "2", "--concurrency", "4"],
                     r"the receipt's share of the process's CPU per claim: -?\d"),
    "instructions": (["--claims", "16", "--rounds", "1", "--concurrency", "4"],
                     r"sent / queued: x\d"),
    "write_path": (["--calls", "200", "--seconds", "0.5", "--rounds", "2"],
                   r"claims/s, thread / own: x\d"),
    "costs": (["--seconds", "1", "--drain-seconds", "1", "--drain-rates", "100",
               "--pharmacies", "2", "--alone", "5", "--history", "50"],
              r"claims the operator received twice: 0 \(must be 0\)"),
}
NEEDS = {"instructions": "valgrind"}  # a program the benchmark runs
UNAVAILABLE = {name for name, program in NEEDS.items() if shutil.which(program) is None}
SLOW = {"costs": 420}  # five gateways in turn, each with its keys: seconds, not the default
CONCURRENT = 3
WORKERS_ARGUMENTS = ["--seconds", "1", "--warmup-seconds", "1", "--connections", "2",
                     "--drain-max-seconds", "60"]
ROUND_TRIPS_ARGUMENTS = ["--claims", "32", "--concurrency", "4", "--alone", "4"]
POSTGRES = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "")
LONGEST_FIRST = ["costs", "workers", "outage_detection", "drain"]  # as CI timed them


def run_bench(name: str, arguments: list[str], timeout: float,
              extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("BENCH_", "GATEWAY_"))}
    return subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [sys.executable, f"bench/{name}.py", *arguments], cwd=ROOT, capture_output=True,
        text=True, timeout=timeout, env={**env, **(extra or {})})


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    """Every benchmark of this module, started CONCURRENT at a time, the longest first."""
    jobs = {name: (arguments, SLOW.get(name, 240), None)
            for name, (arguments, _) in TINY.items() if name not in UNAVAILABLE}
    if POSTGRES and shutil.which("wrk"):
        jobs["workers"] = (WORKERS_ARGUMENTS, 240, {"BENCH_POSTGRES_URL": POSTGRES})
    if POSTGRES:
        jobs["round_trips"] = (ROUND_TRIPS_ARGUMENTS, 240, {"BENCH_POSTGRES_URL": POSTGRES})
    order = sorted(jobs, key=lambda name: (name not in LONGEST_FIRST,
                                           LONGEST_FIRST.index(name)
                                           if name in LONGEST_FIRST else 0, name))
    with ThreadPoolExecutor(CONCURRENT) as pool:
        yield {name: pool.submit(run_bench, name, *jobs[name]) for name in order}


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_benchmark_runs_at_a_tiny_size(
        name: str, runs: dict[str, Future[subprocess.CompletedProcess[str]]]) -> None:
    if name in UNAVAILABLE:
        pytest.skip(f"needs {NEEDS[name]}")
    arguments, table = TINY[name]
    done = runs[name].result()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(rf"^command: .*bench/{name}\.py", done.stdout, re.MULTILINE), done.stdout
    assert re.search(table, done.stdout), done.stdout[-2000:]
    if name == "board_at_scale":  # the board's count is the claims counted in the database
        assert re.search(r"^\[sqlite\] .*board queued=(\d+), counted \1 -> ok$", done.stdout,
                         re.MULTILINE), done.stdout[-2000:]
    if name == "costs":  # both outage gateways measured in turn, each with its own keys
        assert re.search(r"slice by slice -?\d+\.\d%, -?\d+\.\d%$", done.stdout,
                         re.MULTILINE), done.stdout[-2000:]
        outages = re.findall(r"^b outage, .*  (\S.*)$", done.stdout, re.MULTILINE)
        assert len(outages) == 2 and all(re.fullmatch(r"202:\d+", answers)
                                         for answers in outages), done.stdout[-2000:]
        # the writer's busy share and works per group, from the gateway's /metrics
        assert re.search(r"^b outage, no receipt .* \d+% x *\d+\.\d  202:\d+$", done.stdout,
                         re.MULTILINE), done.stdout[-2000:]
        # the open loop's yardstick: the same loader against the operator directly
        assert re.search(r"^d  the same, operator called directly .*  200:\d+$", done.stdout,
                         re.MULTILINE), done.stdout[-2000:]
    if name == "drain":
        assert "ledger (a limited): 30 keys for 30 settled of 30 queued, " \
               "0 sent more than once -> ok" in done.stdout


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("GATEWAY_TEST_POSTGRES_URL"),
                    reason="needs GATEWAY_TEST_POSTGRES_URL")
@pytest.mark.skipif(not shutil.which("wrk"), reason="needs wrk")
def test_the_workers_benchmark_runs_at_a_tiny_size_on_postgres(
        runs: dict[str, Future[subprocess.CompletedProcess[str]]]) -> None:
    """bench/workers.py: 1 then 2 `serve` workers on PostgreSQL (a database of its own on
    the server of GATEWAY_TEST_POSTGRES_URL, dropped at the end); each drain's ledger
    must hold every accepted claim once."""
    done = runs["workers"].result()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"^command: .*bench/workers\.py", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"^c outage 202: req/s x\d", done.stdout, re.MULTILINE), done.stdout
    assert len(re.findall(r" 0 duplicates -> ok", done.stdout)) == 2, done.stdout[-2000:]
    assert "drain: every claim sent once, none twice -> ok" in done.stdout


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("GATEWAY_TEST_POSTGRES_URL"),
                    reason="needs GATEWAY_TEST_POSTGRES_URL")
def test_the_round_trips_benchmark_runs_at_a_tiny_size_on_postgres(
        runs: dict[str, Future[subprocess.CompletedProcess[str]]]) -> None:
    """bench/round_trips.py: in process on PostgreSQL (a database of its own per gateway on
    the server of GATEWAY_TEST_POSTGRES_URL, dropped at the end); every mode's row."""
    done = runs["round_trips"].result()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"^command: .*bench/round_trips\.py", done.stdout, re.MULTILINE), \
        done.stdout
    for mode in ("queued", "card", "sent", "queued alone", "card alone", "sent alone"):
        assert re.search(rf"^{mode}\s+\d+\s+\d", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"statements a round trip$", done.stdout, re.MULTILINE), done.stdout
