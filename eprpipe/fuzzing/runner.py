"""The fuzz loop: each case validated, every other command run on the files validate accepts
(the oracle), in worker processes that are restarted when a case hangs them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import queue
import shutil
import tempfile
import time
import traceback
import tracemalloc
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from eprpipe.format.testing.fuzz_bytes import bomb
from eprpipe.format.testing.fuzz_cases import (
    IMAGE_TARGETED,
    STRATEGIES,
    Case,
    case_strategy,
    make_case,
)
from eprpipe.format.testing.fuzz_seeds import Seed
from eprpipe.format.validate import Report, validate_bytes
from eprpipe.fuzzing.commands import (
    ALARM,
    CaseTimeout,
    Finding,
    Ran,
    first_line,
    memory_guard,
    peak_rss_kib,
    run_command,
    signature,
    watchdog,
)
from eprpipe.fuzzing.files import FileCases
from eprpipe.fuzzing.summary import EVAL_EVERY, CaseResult, Summary, time_bound

CASE_TIMEOUT_S = 10.0  # the in-worker alarm stops a case here
HARD_TIMEOUT_S = 30.0  # the parent kills a worker whose case runs this long (stuck in C code)
ORACLE_COMMANDS = ("info", "info --json", "decode", "eval")  # on files validate_bytes accepts


def validate_case(data: bytes) -> tuple[str, str, str, str]:
    """(outcome, first violation code, signature, traceback) of validating `data`."""
    try:
        with watchdog(CASE_TIMEOUT_S), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy overflow warnings are not findings
            report: object = validate_bytes(data)  # checked: a Report, whatever the bytes
    except CaseTimeout:
        return "timeout", "", f"stopped by the alarm after {CASE_TIMEOUT_S:.0f} s", ""
    except Exception as error:  # the finding this tool exists for
        return "foreign", "", signature(error), traceback.format_exc()
    if not isinstance(report, Report):
        return "foreign", "", f"returned {type(report).__name__}", ""
    code = report.violations[0].code if report.violations else ""
    return ("accepted" if report.valid else "rejected"), code, "", ""


class Oracle:
    """Every other command on a file validate_bytes accepts: none may raise or print a
    traceback; info, info --json and decode must succeed (the file is valid), info --json
    printing JSON."""

    def __init__(self, workdir: Path, eval_every: int) -> None:
        self.path = workdir / "case.epr"
        self.out = workdir / "out.onnx"
        self.eval_every = eval_every

    def commands(self, index: int, strategy: str) -> tuple[str, ...]:
        """eval on every case of a family aimed at it, else on every eval_every-th case."""
        evaluate = strategy in IMAGE_TARGETED or index % self.eval_every == 0
        return ORACLE_COMMANDS if evaluate else ORACLE_COMMANDS[:-1]

    def run(self, data: bytes, commands: Sequence[str], deadline: float) -> tuple[str, list]:
        """('accepted' or 'timeout', findings) after running `commands` on `data`."""
        self.path.write_bytes(data)
        findings: list[Finding] = []
        with memory_guard():
            for command in commands:
                ran = run_command(command, self.path, self.out, deadline - time.perf_counter())
                if ran.timed_out:
                    return "timeout", [*findings, Finding(command, ALARM)]
                finding = ran.finding or self._disagrees(ran)
                if finding is not None:
                    findings.append(finding)
        left = sorted(p.name for p in self.path.parent.iterdir() if p not in (self.path, self.out))
        if left:
            findings.append(Finding("decode", "left a file behind", ", ".join(left)))
        self.out.unlink(missing_ok=True)
        return "accepted", findings

    @staticmethod
    def _disagrees(ran: Ran) -> Finding | None:
        """info and decode fail, or info --json prints no JSON, on a file validate accepts."""
        if ran.code != 0 and ran.command != "eval":
            note = f"exit {ran.code} on a file validate accepts"
            return Finding(ran.command, note, first_line(ran.stderr))
        if ran.command == "info --json":
            try:
                json.loads(ran.stdout)
            except ValueError as error:
                return Finding(ran.command, "printed no JSON", str(error))
        return None


class Fuzzer:
    """One process's state: the prepared seeds, a scratch directory, the memory baseline."""

    def __init__(
        self,
        seeds: Sequence[tuple[str, bytes]],
        run_seed: int,
        trace: bool,
        *,
        strategies: Sequence[str] = (),
        eval_every: int = EVAL_EVERY,
        workdir: Path | None = None,
    ) -> None:
        self.seeds = [Seed.of(name, data) for name, data in seeds]
        self.run_seed = run_seed
        self.trace = trace
        self.strategies = tuple(strategies)
        self.workdir = Path(tempfile.mkdtemp(prefix="fuzz-", dir=workdir or scratch_root()))
        self.oracle = Oracle(self.workdir, eval_every)
        self.files = FileCases(self.workdir)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def warm_up(self) -> int:
        """Import, build the cached bombs, validate and run every command on every seed (the
        digits data loaded once); returns the baseline peak RSS."""
        for seed in self.seeds:
            bomb("doc", seed)
            validate_bytes(seed.data)
            self.oracle.run(seed.data, ORACLE_COMMANDS, time.perf_counter() + 60)
        bomb("zeros", self.seeds[0])
        bomb("meta-limit", self.seeds[0])
        if self.trace:
            tracemalloc.start()
        return peak_rss_kib()

    def case(self, index: int) -> Case:
        return make_case(self.run_seed, index, self.seeds, self.strategies)

    def run(self, index: int) -> CaseResult:
        """Build and run case `index`; never raises (a generator bug is its own outcome)."""
        try:
            case = self.case(index)
        except Exception:
            strategy = case_strategy(self.run_seed, index, self.strategies)
            return CaseResult(index, strategy, -1, "generator-error", error=traceback.format_exc())
        before = peak_rss_kib()
        if self.trace:
            tracemalloc.reset_peak()
        traced_before = tracemalloc.get_traced_memory()[0] if self.trace else 0
        start = time.perf_counter()
        result = CaseResult(index, case.strategy, case.seed, "", size=len(case.data))
        try:
            if case.fs is not None:
                outcome, findings, codes = self.files.run(case.data, case.fs)
                result = replace(result, outcome=outcome, commands=tuple(codes))
            else:
                result = self._validated(result, case, index, start)
                findings = list(result.findings)
        except Exception:  # the runner's own bug, e.g. setting up a node: not the reader's
            return replace(result, outcome="generator-error", error=traceback.format_exc())
        if findings:  # the first finding names the case; slow commands alone make a timeout
            first = next((f for f in findings if f.signature != ALARM), findings[0])
            outcome = "timeout" if first.signature == ALARM else "foreign"
            result = replace(result, outcome=outcome, signature=first.key, error=first.error)
        result.findings = tuple(findings)
        result.seconds = time.perf_counter() - start
        result.traced_peak = tracemalloc.get_traced_memory()[1] - traced_before if self.trace else 0
        result.rss_growth_kib = peak_rss_kib() - before
        return result

    def _validated(self, result: CaseResult, case: Case, index: int, start: float) -> CaseResult:
        """validate_bytes, then, on an accepted file, the other commands (the oracle)."""
        outcome, code, sign, error = validate_case(case.data)
        result = replace(result, outcome=outcome, rejection_code=code, signature=sign, error=error)
        if outcome == "foreign":
            return replace(result, findings=(Finding("validate", sign, error),))
        if outcome != "accepted":
            return result
        commands = self.oracle.commands(index, case.strategy)
        oracle_start = time.perf_counter()
        verdict, findings = self.oracle.run(case.data, commands, start + CASE_TIMEOUT_S)
        result = replace(result, commands=commands, findings=tuple(findings))
        result.oracle_seconds = time.perf_counter() - oracle_start
        if verdict == "timeout":
            result.outcome = "timeout"
        return result


# --- orchestration --------------------------------------------------------------------------


def scratch_root() -> Path:
    """Where workers make their scratch directories: /dev/shm when there is one (decode's
    fsync costs nothing there, and it allows device nodes), else the temporary directory."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


@dataclass(frozen=True)
class Plan:
    seeds: tuple[tuple[str, bytes], ...]
    run_seed: int
    cases: int | None  # run cases 0..cases-1, or ...
    deadline: float | None  # ... until this time.time()
    jobs: int
    trace: bool
    strategies: tuple[str, ...] = ()  # empty: all
    eval_every: int = EVAL_EVERY
    workdir: Path | None = None  # the run's scratch directory, removed at its end


def case_indices(plan: Plan, first: int, skip: frozenset[int] = frozenset()) -> Iterator[int]:
    """first, first + jobs, ...: worker w runs every jobs-th case, so results ignore timing."""
    index = first
    while (plan.cases is None or index < plan.cases) and (
        plan.deadline is None or time.time() < plan.deadline
    ):
        if index not in skip:
            yield index
        index += plan.jobs


def fuzzer_of(plan: Plan) -> Fuzzer:
    return Fuzzer(
        plan.seeds,
        plan.run_seed,
        plan.trace,
        strategies=plan.strategies,
        eval_every=plan.eval_every,
        workdir=plan.workdir,
    )


def worker_main(plan: Plan, worker: int, first: int, skip: frozenset[int], out, clock) -> None:
    """A worker process: warm up, run its cases, send results in batches with its peak RSS.

    `clock[2w]` and `clock[2w + 1]` hold the running case and its start (time.monotonic), so
    the parent can kill a worker stuck where the alarm cannot reach it (inside C code).
    """
    fuzzer = fuzzer_of(plan)
    pid = mp.current_process().pid
    out.put(("ready", worker, pid, fuzzer.warm_up()))
    batch, flushed = [], time.monotonic()
    for index in case_indices(plan, first, skip):
        clock[2 * worker], clock[2 * worker + 1] = index, time.monotonic()
        batch.append(fuzzer.run(index))
        clock[2 * worker + 1] = 0.0
        if len(batch) >= 64 or time.monotonic() - flushed > 0.25:
            out.put(("batch", worker, pid, batch, peak_rss_kib()))
            batch, flushed = [], time.monotonic()
    out.put(("batch", worker, pid, batch, peak_rss_kib()))
    fuzzer.close()
    out.put(("done", worker, pid, None))


class _Pool:
    """The parent's side: J workers, restarted after a hard timeout or a crash."""

    def __init__(self, plan: Plan, summary: Summary, bar: tqdm) -> None:
        self.plan, self.summary, self.bar = plan, summary, bar
        self.context = mp.get_context("spawn")  # a clean process: its RSS is its own
        self.out = self.context.Queue()
        self.clock = self.context.Array("d", 2 * plan.jobs, lock=False)
        self.last = {w: w - plan.jobs for w in range(plan.jobs)}  # last case reported
        self.skip: dict[int, set[int]] = {w: set() for w in range(plan.jobs)}
        self.procs: dict[int, mp.process.BaseProcess] = {}
        self.done: set[int] = set()

    def start(self, worker: int) -> None:
        self.clock[2 * worker + 1] = 0.0
        args = (
            self.plan,
            worker,
            self.last[worker] + self.plan.jobs,
            frozenset(self.skip[worker]),
            self.out,
            self.clock,
        )
        process = self.context.Process(target=worker_main, args=args, daemon=True)
        process.start()
        self.procs[worker] = process

    def handle(self, message: tuple) -> None:
        kind, worker, pid = message[:3]
        if kind == "ready":
            self.summary.rss(pid, baseline=message[3])
        elif kind == "batch":
            for result in message[3]:
                self.summary.add(result)
                self.last[worker] = max(self.last[worker], result.case)
            self.summary.rss(pid, peak=message[4])
            self.bar.update(len(message[3]))
            self.bar.set_postfix(
                foreign=self.summary.outcomes["foreign"], slow=self.summary.slow, refresh=False
            )
        else:
            self.done.add(worker)

    def replace_stuck(self) -> None:
        """Kill a worker past the hard timeout, or notice one that crashed; restart it.

        The case it was running counts as over 1 s (killed) or foreign (crashed) and is
        skipped; the restarted worker re-runs the cases whose results died with it.
        """
        for worker, process in list(self.procs.items()):
            started = self.clock[2 * worker + 1]
            hung = bool(started) and time.monotonic() - started > HARD_TIMEOUT_S
            if worker in self.done or process.exitcode == 0 or (process.is_alive() and not hung):
                continue
            if not started:
                raise RuntimeError(f"worker {worker} died outside a case: {process.exitcode}")
            index = int(self.clock[2 * worker])
            process.kill()
            process.join()
            if hung:
                note = f"worker killed after {HARD_TIMEOUT_S:.0f} s (stuck outside Python?)"
            else:
                note = f"worker crashed, exit code {process.exitcode} (a signal if negative)"
            outcome = "timeout" if hung else "foreign"
            strategy = case_strategy(self.plan.run_seed, index, self.plan.strategies)
            seconds = time.monotonic() - started
            self.summary.add(CaseResult(index, strategy, -1, outcome, seconds, signature=note))
            self.skip[worker].add(index)
            self.start(worker)

    def run(self) -> None:
        for worker in range(self.plan.jobs):
            self.start(worker)
        checked = time.monotonic()
        while len(self.done) < self.plan.jobs:
            with contextlib.suppress(queue.Empty):
                self.handle(self.out.get(timeout=0.5))
            if time.monotonic() - checked > 0.5:
                self.replace_stuck()
                checked = time.monotonic()
        for process in self.procs.values():
            process.join()


def fuzz(
    seeds: Sequence[tuple[str, bytes]],
    *,
    run_seed: int = 0,
    cases: int | None = None,
    seconds: float | None = None,
    jobs: int = 2,
    trace_memory: bool = False,
    progress: bool = True,
    strategies: Sequence[str] = (),
    eval_every: int = EVAL_EVERY,
) -> Summary:
    """Run the cases (a count, or until `seconds` pass); jobs=1 runs in this process.

    The parent keeps counts, the distinct findings and the slowest cases, never per-case
    results, so a run of any length takes the same memory.
    """
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"unknown strategies {sorted(unknown)}; known: {sorted(STRATEGIES)}")
    deadline = time.time() + seconds if seconds is not None else None
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-run-", dir=scratch_root()))
    plan = Plan(
        tuple(seeds),
        run_seed,
        cases,
        deadline,
        max(1, jobs),
        trace_memory,
        tuple(sorted(strategies)),
        eval_every,
        workdir,
    )
    described = [
        {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in seeds
    ]
    summary = Summary(run_seed, plan.jobs, described, list(plan.strategies), eval_every)
    started = time.perf_counter()
    bar = tqdm(total=cases, unit="case", disable=not progress, smoothing=0.05, dynamic_ncols=True)
    try:
        with bar:
            if plan.jobs == 1:
                _run_here(plan, summary, bar)
            else:
                _Pool(plan, summary, bar).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary.wall_seconds = time.perf_counter() - started
    if trace_memory and tracemalloc.is_tracing():
        tracemalloc.stop()
    return summary


def _run_here(plan: Plan, summary: Summary, bar: tqdm) -> None:
    """All cases in this process (--jobs 1): no hard timeout, no restart."""
    fuzzer = fuzzer_of(plan)
    try:
        summary.rss(0, baseline=fuzzer.warm_up())
        for index in case_indices(plan, 0):
            summary.add(fuzzer.run(index))
            bar.update(1)
        summary.rss(0, peak=peak_rss_kib())
    finally:
        fuzzer.close()


def reproduce(
    seeds: Sequence[tuple[str, bytes]],
    case: str,
    dump: Path | None,
    strategies: Sequence[str] = (),
) -> int:
    """Re-run one case in this process as the fuzz loop does (the oracle and filesystem
    checks included), showing every finding's traceback; 0 if it behaves."""
    run_seed, index = (int(part) for part in case.split(":"))
    fuzzer = Fuzzer(seeds, run_seed, False, strategies=strategies)
    try:
        built = fuzzer.case(index)
        where = f", {built.fs.describe()}" if built.fs else ""
        print(
            f"case {case}: strategy {built.strategy}, seed {built.seed} "
            f"({fuzzer.seeds[built.seed].name}), {len(built.data):,} bytes, sha256 "
            f"{hashlib.sha256(built.data).hexdigest()[:16]}{where}"
        )
        if dump is not None:
            dump.write_bytes(built.data)
            print(f"wrote {dump}")
        result = fuzzer.run(index)
    finally:
        fuzzer.close()
    ran = f"; then {', '.join(result.commands)}" if result.commands else ""
    print(
        f"{result.outcome} {result.rejection_code} in {result.seconds:.3f} s{ran}".replace(
            "  ", " "
        )
    )
    for finding in result.findings:
        print(f"FINDING {finding.key}\n{finding.error.rstrip()}")
    if result.outcome == "timeout" and not result.findings:
        print(f"TIMEOUT {result.signature}")
    fine = result.outcome in ("accepted", "rejected") and result.seconds <= time_bound(result)
    return 0 if fine else 1
