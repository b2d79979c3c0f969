"""The validator under fuzzing (tools/fuzz_container.py): every input gives a Report, no raise.

The property test draws cases from the tool's own mutation strategies, so the suite and the
long command-line runs exercise the same mutations; the loop test runs the tool itself.
"""

from __future__ import annotations

import functools
import json
import random
import sys
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eprpipe.validate import Report, validate_bytes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))  # spawned workers find the tool by this path too

import fuzz_container as fuzz  # noqa: E402


@functools.cache
def seeds() -> tuple[fuzz.Seed, ...]:
    """The builtin seeds, prepared once: in-memory files, independent of spec/vectors."""
    return tuple(fuzz.Seed.of(f"builtin:{i}", data) for i, data in enumerate(fuzz.builtin_seeds()))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    strategy=st.sampled_from(sorted(fuzz.STRATEGIES)),
    seed_index=st.integers(0, 2),
    rng_seed=st.integers(0, 2**64 - 1),
)
def test_mutated_files_give_a_report_never_an_exception(strategy, seed_index, rng_seed):
    data = fuzz.STRATEGIES[strategy](random.Random(rng_seed), seeds()[seed_index], seeds())
    report = validate_bytes(data)
    assert isinstance(report, Report)
    assert report.valid == (not report.violations)


def test_fuzz_loop_finds_no_foreign_exception_and_reaches_both_outcomes():
    summary = fuzz.fuzz(
        [(seed.name, seed.data) for seed in seeds()], cases=300, jobs=1, progress=False
    )
    assert summary.cases == 300
    foreign = {sign: entry["first_case"] for sign, entry in summary.foreign.items()}
    assert summary.outcomes["foreign"] == 0, foreign
    assert summary.outcomes["generator-error"] == 0, summary.generator_errors
    # Both outcomes are common, not rare: CRC-fixing strategies reach valid files (raw data
    # bytes edited, sections reordered, optional sections added, benign manifest keys).
    assert summary.outcomes["rejected"] > 100
    assert summary.outcomes["accepted"] > 10
    assert set(summary.strategies) == set(fuzz.STRATEGIES)
    assert json.loads(json.dumps(summary.as_json()))["cases"] == 300


def test_cases_are_reproducible_from_run_seed_and_index():
    first = [fuzz.make_case(7, index, seeds()) for index in range(40)]
    assert first == [fuzz.make_case(7, index, seeds()) for index in range(40)]
    assert len({data for _, _, data in first}) > 30


@pytest.mark.parametrize("place", fuzz.EXTERNAL_PLACES)
@pytest.mark.parametrize("mode", ["both", "location", "entries"])
def test_external_data_to_etc_passwd_is_rejected_wherever_it_hides(place, mode):
    seed = seeds()[2]  # has an If with subgraphs
    tensor = fuzz.external_tensor("leak", mode, fuzz.PASSWD)
    graph = fuzz.place_external(seed.model(), place, tensor)
    data = fuzz.assemble(seed.container.with_body(b"GRPH", fuzz.zstd(graph)))
    report = validate_bytes(data)
    assert [v.code for v in report.violations] == ["external-data"], report.violations


def test_frame_surgery_keeps_the_blocks_and_changes_only_the_claims():
    content = b'{"a":1}' * 50
    frame = fuzz.Frame.parse(fuzz.zstd(content))
    assert frame.content_size == len(content)
    rebuilt = fuzz.replace(frame, content_size=len(content)).build()
    assert zstandard.ZstdDecompressor().decompress(rebuilt) == content
    lying = zstandard.get_frame_parameters(fuzz.replace(frame, content_size=1 << 63).build())
    assert lying.content_size == 1 << 63


def test_reproduce_replays_one_case_in_process(capsys, tmp_path):
    out = tmp_path / "case.epr"
    args = ["--seeds-dir", str(tmp_path), "--reproduce", "3:17", "--dump", str(out)]
    assert fuzz.main(args) == 0
    printed = capsys.readouterr().out
    assert "case 3:17: strategy" in printed and out.exists()
    assert fuzz.make_case(3, 17, seeds())[2] == out.read_bytes()


def _counts(rows: dict[str, dict]) -> dict[str, tuple[int, ...]]:
    """Per-strategy outcome counts without the timings, which differ from run to run."""
    keys = ("cases", "rejected", "accepted", "foreign")
    return {name: tuple(row[key] for key in keys) for name, row in rows.items()}


def test_worker_processes_run_the_same_cases_as_one_process(tmp_path):
    report = tmp_path / "fuzz.json"
    args = ["--seeds-dir", str(tmp_path), "--cases", "120", "--jobs", "2", "--no-progress"]
    code = fuzz.main([*args, "--json", str(report)])
    parallel = json.loads(report.read_text())
    alone = fuzz.fuzz([(s.name, s.data) for s in seeds()], cases=120, jobs=1, progress=False)
    assert code == (0 if parallel["ok"] else 1)
    assert (parallel["cases"], parallel["jobs"]) == (120, 2)
    assert _counts(parallel["strategies"]) == _counts(alone.as_json()["strategies"])
    assert parallel["violation_codes"] == dict(alone.codes.most_common())
