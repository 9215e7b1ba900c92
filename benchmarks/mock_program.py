"""Benchmark (not a test): the program's own cost under Pulumi mocks.

Prints the median wall time to run the program for one stack under mocks,
against an empty program under the same mocks (the floor), and how it grows
with 1, 10 and 50 gateways.

    .venv/bin/python benchmarks/mock_program.py [--runs N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from mock_stack import config_values_of, run_stack  # noqa: E402


def median_seconds(run: Callable[[], Any], runs: int) -> float:
    run()  # warm imports and caches
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def with_gateways(values: dict[str, Any], count: int) -> dict[str, Any]:
    changed = copy.deepcopy(values)
    template = changed["gateways"][0]
    changed["gateways"] = [dict(template, name=f"gateway-{i}") for i in range(count)]
    return changed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    values, _ = config_values_of(ROOT / "stacks" / "Pulumi.local.yaml")

    floor = median_seconds(lambda: run_stack("local", values, program=lambda: None), args.runs)
    print(f"empty program under mocks:        median {floor * 1000:8.1f} ms  (floor)")
    baseline = None
    for count in (1, 10, 50):
        config = with_gateways(values, count)

        def run_program(config: dict[str, Any] = config) -> None:
            run_stack("local", config)

        seconds = median_seconds(run_program, args.runs)
        baseline = baseline or seconds
        print(
            f"local stack, {count:2d} gateway(s):       median {seconds * 1000:8.1f} ms"
            f"  {seconds / floor:5.1f}x floor  {seconds / baseline:5.2f}x one gateway"
        )


if __name__ == "__main__":
    main()
