"""Why orjson: encoding and decoding tether envelopes with orjson and with the stdlib json.

Run from the repository root::

    .venv/bin/python -m bench.codec_choice            # full run, about 15 seconds
    .venv/bin/python -m bench.codec_choice --quick    # a couple of seconds
    .venv/bin/python -m bench.codec_choice --json out.json

One operation is one encode plus one decode of an envelope, as every in-process
call does once for its `call` message and once for its `result`:

* orjson: `orjson.loads(orjson.dumps(obj))`;
* stdlib: `json.loads(json.dumps(obj).encode())` (bytes, as a transport sends).

The envelopes are shaped as tether's protocol makes them (`call`: id, interface,
version, operation, an args list holding an unstructured attrs object, and the
nested `ctx`; `result`: id and an unstructured attrs value). Unstructuring is
done once beforehand: it costs the same whichever codec encodes the result.

As in `bench.inprocess`, the two codecs alternate for several rounds on the
same number of operations; the table shows the best round and the median, and
the ratio is computed from the best rounds.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import attrs
import orjson

from bench.inprocess import (
    format_machine,
    format_rate,
    machine_info,
    markdown_table,
    parse_bench_args,
)
from tether.runtime import CONVERTER

Codec = Literal["orjson", "stdlib json"]
CODECS: tuple[Codec, ...] = ("orjson", "stdlib json")


@attrs.frozen
class IModelProps:
    key: str
    name: str
    description: str | None
    tags: list[str]


@attrs.frozen
class Robot:
    id: int
    name: str
    x: float
    y: float
    active: bool


def envelopes() -> dict[str, dict[str, Any]]:
    """A typical `call` and `result` envelope, unstructured by tether's own converter.

    The call is `RobotWorldReadRpcInterface.get_robot(imodel: IModelProps,
    robot_id: int) -> Robot`, made outside any request context, with a 30 s deadline.
    """
    imodel = IModelProps(
        key="imodel-0001",
        name="Factory floor",
        description="Ground floor of building 7, east wing",
        tags=["production", "robots"],
    )
    call = {
        "t": "call",
        "id": 1234,
        "iface": "RobotWorldReadRpcInterface",
        "ver": "1.2.0",
        "op": "get_robot",
        "args": [CONVERTER.unstructure(imodel), 42],
        "ctx": {
            "activity_id": "6f1c2a9e-3b7d-4c15-8e02-00000000002a",
            "session_id": "0b9f3e57-8a41-4d6c-9f3e-2c7a51d0e9b4",
            "application_id": "robot-console",
            "application_version": "3.4.1",
        },
        "timeout_ms": 30000,
    }
    robot = Robot(id=42, name="Unit 42 \u2014 welder", x=12.5, y=-3.25, active=True)
    result = {"t": "result", "id": 1234, "value": CONVERTER.unstructure(robot)}
    return {"call": call, "result": result}


def _orjson_round_trip(obj: Any) -> Any:
    return orjson.loads(orjson.dumps(obj))


def _stdlib_round_trip(obj: Any) -> Any:
    return json.loads(json.dumps(obj).encode())


ROUND_TRIPS: dict[Codec, Callable[[Any], Any]] = {
    "orjson": _orjson_round_trip,
    "stdlib json": _stdlib_round_trip,
}
ENCODERS: dict[Codec, Callable[[Any], bytes]] = {
    "orjson": orjson.dumps,
    "stdlib json": lambda obj: json.dumps(obj).encode(),
}


@attrs.define
class Case:
    envelope: str
    codec: Codec
    obj: dict[str, Any]
    ops: int = 0
    rates: list[float] = attrs.field(factory=list)

    @property
    def label(self) -> str:
        return f"`{self.envelope}` envelope, {self.codec}"

    @property
    def size(self) -> int:
        return len(ENCODERS[self.codec](self.obj))

    @property
    def best(self) -> float:
        return max(self.rates)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def measure(case: Case, ops: int) -> float:
    """Encode and decode the envelope `ops` times; return the operations per second."""
    round_trip = ROUND_TRIPS[case.codec]
    obj = case.obj
    gc.collect()
    started = time.perf_counter()
    for _ in range(ops):
        round_trip(obj)
    return ops / (time.perf_counter() - started)


def run_cases(rounds: int, seconds: float) -> list[Case]:
    cases = [Case(name, codec, obj) for name, obj in envelopes().items() for codec in CODECS]
    for case in cases:
        decoded = ROUND_TRIPS[case.codec](case.obj)
        if decoded != case.obj:
            raise AssertionError(f"{case.label}: round trip changed the envelope")
        warmup = 2_000
        case.ops = max(1_000, round(measure(case, warmup) * seconds))
    for index in range(rounds):
        print(f"round {index + 1}/{rounds}", file=sys.stderr, flush=True)
        for case in cases if index % 2 == 0 else reversed(cases):
            case.rates.append(measure(case, case.ops))
    return cases


def ratio_to_stdlib(cases: Sequence[Case], case: Case) -> float:
    stdlib = next(c for c in cases if (c.envelope, c.codec) == (case.envelope, "stdlib json"))
    return case.best / stdlib.best


def results_table(cases: Sequence[Case]) -> str:
    rows = [
        [
            case.label,
            str(case.size),
            format_rate(case.best),
            format_rate(case.median),
            f"{1e6 / case.best:.2f}",
            "—" if case.codec == "stdlib json" else f"{ratio_to_stdlib(cases, case):.2f}x",
        ]
        for case in cases
    ]
    headers = [
        "envelope, codec",
        "bytes",
        "encode+decode/s (best)",
        "median",
        "µs per op (best)",
        "speed-up over stdlib",
    ]
    return markdown_table(headers, rows)


def main(argv: Sequence[str] | None = None) -> None:
    args, rounds, seconds = parse_bench_args(
        "bench.codec_choice", __doc__, argv, quick_seconds=0.05
    )

    info = machine_info()
    cases = run_cases(rounds, seconds)
    print(f"\n{format_machine(info)}")
    print(f"{rounds} interleaved rounds\n")
    print(results_table(cases))

    if args.json is not None:
        result = {
            "machine": info,
            "rounds": rounds,
            "cases": [
                {
                    "envelope": case.envelope,
                    "codec": case.codec,
                    "bytes": case.size,
                    "ops_per_round": case.ops,
                    "rates": case.rates,
                    "best": case.best,
                    "median": case.median,
                    "ratio_to_stdlib": None
                    if case.codec == "stdlib json"
                    else ratio_to_stdlib(cases, case),
                }
                for case in cases
            ],
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
