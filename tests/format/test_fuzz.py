"""The validator under fuzzing (tools/fuzz_container.py): every input gives a Report, no raise;
every command on a file validate accepts, and on non-regular inputs and outputs, behaves.

The property test draws cases from the fuzzer's own case families (eprpipe.format.testing), so
the suite and the long command-line runs exercise the same mutations; the loop tests run the
fuzzer's runner (eprpipe.fuzzing) and its command line, and one test per attack family runs its
cases through the real runner and checks its target.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eprpipe.format.testing.fuzz_bytes import Frame
from eprpipe.format.testing.fuzz_cases import (
    INPUT_KINDS,
    OUTPUT_KINDS,
    STRATEGIES,
    FsPlan,
    case_strategy,
    make_case,
)
from eprpipe.format.testing.fuzz_graphs import (
    EXTERNAL_PLACES,
    PASSWD,
    external_tensor,
    place_external,
)
from eprpipe.format.testing.fuzz_seeds import Seed, builtin_seeds, fast_zstd
from eprpipe.format.validate import Report, validate_bytes
from eprpipe.fuzzing.files import FileCases
from eprpipe.fuzzing.runner import fuzz, reproduce
from eprpipe.fuzzing.summary import MAX_SLOW_KEPT, CaseResult, Summary

TOOL = Path(__file__).resolve().parents[2] / "tools" / "fuzz_container.py"


@functools.cache
def seeds() -> tuple[Seed, ...]:
    """The builtin seeds, prepared once: in-memory files, independent of spec/vectors."""
    return tuple(Seed.of(f"builtin:{i}", data) for i, data in enumerate(builtin_seeds()))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    strategy=st.sampled_from(sorted(STRATEGIES)),
    seed_index=st.integers(0, len(seeds()) - 1),
    rng_seed=st.integers(0, 2**64 - 1),
)
def test_mutated_files_give_a_report_never_an_exception(strategy, seed_index, rng_seed):
    data = STRATEGIES[strategy](random.Random(rng_seed), seeds()[seed_index], seeds())
    report = validate_bytes(data)
    assert isinstance(report, Report)
    assert report.valid == (not report.violations)


def _run(cases: int, strategies: tuple[str, ...] = ()) -> Summary:
    named = [(seed.name, seed.data) for seed in seeds()]
    return fuzz(named, cases=cases, jobs=1, progress=False, strategies=strategies)


def _foreign(summary: Summary) -> dict[str, str]:
    return {sign: entry["first_case"] for sign, entry in summary.foreign.items()}


def test_fuzz_loop_finds_no_foreign_exception_and_reaches_both_outcomes():
    summary = _run(300)
    assert summary.cases == 300
    assert summary.outcomes["foreign"] == 0, _foreign(summary)
    assert summary.outcomes["generator-error"] == 0, summary.generator_errors
    # Both outcomes are common, not rare: CRC-fixing strategies reach valid files (raw data
    # bytes edited, sections reordered, optional sections added, benign manifest keys).
    assert summary.outcomes["rejected"] > 100
    assert summary.outcomes["accepted"] > 10
    assert set(summary.strategies) == set(STRATEGIES)
    # Every accepted file went through the other commands; eval reached some of them.
    run = summary.commands_run
    assert run["info"] == run["info --json"] == run["decode"] >= summary.oracle_cases > 10
    assert 0 < run["eval"] < run["decode"]
    assert json.loads(json.dumps(summary.as_json()))["cases"] == 300


def test_typed_manifest_lies_are_rejected_as_bad_manifest_or_survive_every_command():
    summary = _run(30, ("typed-manifest",))
    assert summary.outcomes["foreign"] == summary.outcomes["timeout"] == 0, _foreign(summary)
    assert summary.codes["bad-manifest"] >= 20, summary.codes  # the schema sees most lies
    # The lies the schema allows (boundary values, metrics without test_examples) are valid
    # files: every command ran on them, eval included, and none crashed.
    assert summary.commands_run["eval"] == summary.oracle_cases == summary.outcomes["accepted"]


def test_padding_and_unknown_sections_buy_no_element_allowance():
    summary = _run(20, ("padding-allowance",))
    assert summary.codes == {"limit-exceeded": 20}, (summary.codes, _foreign(summary))
    assert summary.slow == 0  # refused before any of the declared elements exist


def test_graph_output_lies_are_rejected_or_evaluated_without_a_crash():
    summary = _run(40, ("graph-lies",))
    slow = summary.slowest_cases()
    assert summary.outcomes["foreign"] == summary.outcomes["timeout"] == 0, (
        _foreign(summary),
        slow,
    )
    assert summary.codes["graph-mismatch"] >= 10, summary.codes  # the profile's output rules
    assert summary.commands_run["eval"] >= summary.oracle_cases > 0


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> FileCases:
    return FileCases(tmp_path_factory.mktemp("fuzz-files"))


PLANS = [FsPlan(kind, "new") for kind in INPUT_KINDS] + [
    FsPlan("regular", kind) for kind in OUTPUT_KINDS[1:]
]
READABLE = ("regular", "symlink", "symlink-chain")  # inputs that lead to a regular file
WRITABLE = ("new", "dangling-symlink")  # outputs decode may write (a link's target is created)


@pytest.mark.parametrize("plan", PLANS, ids=FsPlan.describe)
def test_non_regular_inputs_and_outputs_leave_every_node_as_it_was(files, plan):
    data = seeds()[3].data  # valid, and `eval --dataset digits` runs it
    outcome, findings, codes = files.run(data, plan)
    assert findings == [], findings  # no exception, traceback, hang, replaced node, temp file
    readable = plan.input in READABLE
    assert codes == {
        "validate": 0 if readable else 1,
        "info": 0 if readable else 1,
        "decode": 0 if readable and plan.output in WRITABLE else 1,
        "eval": 0 if readable else 1,
    }
    assert outcome == ("accepted" if readable else "rejected")


def test_the_summary_keeps_a_bounded_number_of_slow_cases():
    summary = Summary(0, 1, [])
    for index in range(3 * MAX_SLOW_KEPT):
        summary.add(CaseResult(index, "deep", 0, "rejected", seconds=1.5 + index / 1000))
    assert summary.slow == 3 * MAX_SLOW_KEPT
    kept = [case["case"] for case in summary.slowest_cases()]  # the slowest first
    assert kept == [f"0:{index}" for index in range(3 * MAX_SLOW_KEPT)][::-1][: len(kept)]
    assert len(kept) == MAX_SLOW_KEPT


def test_cases_are_reproducible_from_run_seed_and_index():
    first = [make_case(7, index, seeds()) for index in range(40)]
    assert first == [make_case(7, index, seeds()) for index in range(40)]
    assert len({case.data for case in first}) > 30
    planned = [make_case(7, i, seeds(), ("filesystem",)).fs for i in range(10)]
    assert all(plan is not None for plan in planned)
    assert planned == [make_case(7, i, seeds(), ("filesystem",)).fs for i in range(10)]


@pytest.mark.parametrize("place", EXTERNAL_PLACES)
@pytest.mark.parametrize("mode", ["both", "location", "entries"])
def test_external_data_to_etc_passwd_is_rejected_wherever_it_hides(place, mode):
    seed = seeds()[2]  # has an If with subgraphs
    tensor = external_tensor("leak", mode, PASSWD)
    graph = place_external(seed.model(), place, tensor)
    data = seed.container.with_body(b"GRPH", fast_zstd(graph)).to_bytes()
    report = validate_bytes(data)
    assert [v.code for v in report.violations] == ["external-data"], report.violations


def test_frame_surgery_keeps_the_blocks_and_changes_only_the_claims():
    content = b'{"a":1}' * 50
    frame = Frame.parse(fast_zstd(content))
    assert frame.content_size == len(content)
    rebuilt = dataclasses.replace(frame, content_size=len(content)).build()
    assert zstandard.ZstdDecompressor().decompress(rebuilt) == content
    lying = zstandard.get_frame_parameters(dataclasses.replace(frame, content_size=1 << 63).build())
    assert lying.content_size == 1 << 63


def test_reproduce_replays_one_case_in_process(capsys, tmp_path):
    index = next(i for i in range(100) if case_strategy(3, i) == "deep")
    out = tmp_path / "case.epr"
    assert reproduce([(seed.name, seed.data) for seed in seeds()], f"3:{index}", out) == 0
    printed = capsys.readouterr().out
    assert f"case 3:{index}: strategy deep" in printed and out.exists()
    assert make_case(3, index, seeds()).data == out.read_bytes()


def _counts(rows: dict[str, dict]) -> dict[str, tuple[int, ...]]:
    """Per-strategy outcome counts without the timings, which differ from run to run."""
    keys = ("cases", "rejected", "accepted", "foreign")
    return {name: tuple(row[key] for key in keys) for name, row in rows.items()}


def test_the_command_line_runs_the_same_cases_in_workers_as_one_process(tmp_path):
    """tools/fuzz_container.py with two worker processes (its seeds dir empty: builtin seeds)."""
    report = tmp_path / "fuzz.json"
    args = ["--seeds-dir", str(tmp_path), "--cases", "120", "--jobs", "2", "--no-progress"]
    run = subprocess.run(
        [sys.executable, str(TOOL), *args, "--json", str(report)], capture_output=True, text=True
    )
    parallel = json.loads(report.read_text())
    alone = fuzz([(s.name, s.data) for s in seeds()], cases=120, jobs=1, progress=False)
    assert run.returncode == (0 if parallel["ok"] else 1), run.stderr
    assert (parallel["cases"], parallel["jobs"]) == (120, 2)
    assert _counts(parallel["strategies"]) == _counts(alone.as_json()["strategies"])
    assert parallel["violation_codes"] == dict(alone.codes.most_common())
