"""What a fuzz run found, counted in memory bounded whatever the case count, and the summary
printed at its end."""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import asdict, dataclass, field

from eprpipe.format.testing.fuzz_cases import IMAGE_TARGETED
from eprpipe.fuzzing.commands import EVAL_MEMORY_MIB, EVAL_SECONDS, Finding

SLOW_S = 1.0  # a case slower than this (plus eval's time limit where eval ran) is reported
MEMORY_SLACK = 64 << 20  # the RSS bound is 10 x the largest input plus this
MEMORY_FACTOR = 10
SHOW_TRACEBACKS = 3
OUTCOMES = ("rejected", "accepted", "foreign", "timeout", "generator-error")
MAX_SLOW_KEPT = 50  # the summary keeps this many slowest cases, and counts the rest
MAX_SIGNATURES = 200  # distinct findings kept in full; more are counted together
EVAL_EVERY = 8  # eval runs on every 8th accepted case (and on every case aimed at it)


@dataclass
class CaseResult:
    case: int
    strategy: str
    seed: int  # index into the seed list, -1 if unknown
    outcome: str  # one of OUTCOMES
    seconds: float = 0.0
    size: int = 0
    rss_growth_kib: int = 0  # how far this case raised its process's peak RSS
    traced_peak: int = 0  # tracemalloc peak during validation, with --trace-memory
    rejection_code: str = ""  # the first violation code of a rejection
    signature: str = ""  # foreign exceptions and timeouts: the first finding's key, or a note
    error: str = ""  # foreign exceptions: the first finding's traceback
    findings: tuple[Finding, ...] = ()  # foreign: every command that misbehaved
    commands: tuple[str, ...] = ()  # the commands run on the file after validate_bytes
    oracle_seconds: float = 0.0  # time in those commands


def time_bound(result: CaseResult) -> float:
    """Seconds a case may take: SLOW_S, plus eval's own time limit where eval ran on it."""
    return SLOW_S + (EVAL_SECONDS if "eval" in result.commands else 0.0)


@dataclass
class StrategyRow:
    cases: int = 0
    rejected: int = 0
    accepted: int = 0
    foreign: int = 0
    slow: int = 0
    slowest: float = 0.0
    seconds: float = 0.0  # all its cases, oracle included: what the family costs a run


@dataclass
class Summary:
    """Everything a run found, in memory bounded whatever the case count; `ok` is the exit
    criterion."""

    run_seed: int
    jobs: int
    seeds: list[dict]
    strategy_names: list[str] = field(default_factory=list)  # empty: all
    eval_every: int = EVAL_EVERY
    wall_seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)
    strategies: dict[str, StrategyRow] = field(default_factory=dict)
    codes: Counter = field(default_factory=Counter)
    foreign: dict[str, dict] = field(default_factory=dict)  # by signature: count, first case
    by_command: Counter = field(default_factory=Counter)  # foreign findings per command
    commands_run: Counter = field(default_factory=Counter)  # commands run after validation
    oracle_cases: int = 0  # cases validate_bytes accepted, then the other commands ran on
    accepted_seconds: float = 0.0  # their validation and oracle time (timeouts left out)
    oracle_seconds: float = 0.0
    generator_errors: list[dict] = field(default_factory=list)
    slow_count: int = 0
    slow_cases: list[tuple] = field(default_factory=list)  # a heap of the slowest
    slowest: dict = field(default_factory=lambda: {"seconds": 0.0, "case": None})
    max_input_bytes: int = 0
    rss_kib: dict[int, list[int]] = field(default_factory=dict)  # pid: [baseline, peak]
    rss_raisers: list[dict] = field(default_factory=list)
    traced_peak: dict = field(default_factory=lambda: {"bytes": 0, "case": None})

    def case_id(self, index: int) -> str:
        return f"{self.run_seed}:{index}"

    def add(self, result: CaseResult) -> None:
        """Count one case."""
        case = self.case_id(result.case)
        row = self.strategies.setdefault(result.strategy, StrategyRow())
        self.outcomes[result.outcome] += 1
        row.cases += 1
        if result.outcome in ("rejected", "accepted", "foreign"):
            setattr(row, result.outcome, getattr(row, result.outcome) + 1)
        if result.rejection_code:
            self.codes[result.rejection_code] += 1
        if result.outcome == "foreign":
            self._foreign(result, case)
        if result.oracle_seconds:  # validate_bytes accepted it, and the oracle ran
            self.commands_run.update(result.commands)
        if result.oracle_seconds and result.outcome != "timeout":  # timeouts: their own line
            self.oracle_cases += 1
            self.oracle_seconds += result.oracle_seconds
            self.accepted_seconds += result.seconds
        if result.outcome == "generator-error" and len(self.generator_errors) < 20:
            self.generator_errors.append({"case": case, "traceback": result.error})
        self._timing(result, row, case)
        self._memory(result, case)

    def _foreign(self, result: CaseResult, case: str) -> None:
        """Group the case's findings by signature (at most MAX_SIGNATURES kept in full)."""
        findings = result.findings or (Finding("worker", result.signature, result.error),)
        for finding in findings:
            self.by_command[finding.command] += 1
            key = finding.key if len(self.foreign) < MAX_SIGNATURES else "(other signatures)"
            entry = self.foreign.setdefault(
                key,
                {
                    "count": 0,
                    "command": finding.command,
                    "first_case": case,
                    "strategy": result.strategy,
                    "seed": result.seed,
                    "traceback": finding.error or finding.signature,
                },
            )
            entry["count"] += 1

    def _timing(self, result: CaseResult, row: StrategyRow, case: str) -> None:
        row.seconds += result.seconds
        row.slowest = max(row.slowest, result.seconds)
        if result.seconds > self.slowest["seconds"]:
            self.slowest = {"seconds": result.seconds, "case": case, "strategy": result.strategy}
        if result.seconds > time_bound(result) or result.outcome == "timeout":
            row.slow += 1
            self.slow_count += 1
            entry = (result.seconds, case, result.strategy, result.outcome, result.signature)
            if len(self.slow_cases) < MAX_SLOW_KEPT:
                heapq.heappush(self.slow_cases, entry)
            else:
                heapq.heappushpop(self.slow_cases, entry)

    def _memory(self, result: CaseResult, case: str) -> None:
        self.max_input_bytes = max(self.max_input_bytes, result.size)
        if result.traced_peak > self.traced_peak["bytes"]:
            self.traced_peak = {"bytes": result.traced_peak, "case": case}
        if result.rss_growth_kib > 0:
            self.rss_raisers.append(
                {"case": case, "strategy": result.strategy, "rss_growth_kib": result.rss_growth_kib}
            )
            self.rss_raisers = sorted(self.rss_raisers, key=lambda r: -r["rss_growth_kib"])[:5]

    def rss(self, pid: int, baseline: int | None = None, peak: int | None = None) -> None:
        """Note a worker process's baseline (after warm-up) or its latest peak RSS."""
        entry = self.rss_kib.setdefault(pid, [0, 0])
        if baseline is not None:
            entry[0] = entry[1] = baseline
        if peak is not None:
            entry[1] = max(entry[1], peak)

    @property
    def cases(self) -> int:
        return sum(self.outcomes.values())

    @property
    def slow(self) -> int:
        return self.slow_count

    def slowest_cases(self) -> list[dict]:
        keys = ("seconds", "case", "strategy", "outcome", "note")
        return [dict(zip(keys, entry, strict=True)) for entry in sorted(self.slow_cases)[::-1]]

    @property
    def rss_increase(self) -> int:
        """The largest rise of a worker's peak RSS over its warm-up baseline, in bytes."""
        return 1024 * max((peak - base for base, peak in self.rss_kib.values()), default=0)

    @property
    def memory_bound(self) -> int:
        return MEMORY_FACTOR * self.max_input_bytes + MEMORY_SLACK + (EVAL_MEMORY_MIB << 20)

    @property
    def ok(self) -> bool:
        clean = not (self.outcomes["foreign"] or self.outcomes["generator-error"] or self.slow)
        return clean and self.rss_increase <= self.memory_bound

    def throughput(self) -> dict:
        """Cases per second overall (wall clock, all workers), and the cost of accepted ones."""
        accepted = self.oracle_cases
        per_accepted = self.accepted_seconds / accepted if accepted else 0.0
        return {
            "cases_per_second": round(self.cases / self.wall_seconds, 1)
            if self.wall_seconds
            else 0.0,
            "accepted_ms_per_case": round(1000 * per_accepted, 2),
            "accepted_per_second_per_worker": round(1 / per_accepted, 1) if per_accepted else 0.0,
            "oracle_seconds": round(self.oracle_seconds, 2),
        }

    def as_json(self) -> dict:
        return {
            "ok": self.ok,
            "run_seed": self.run_seed,
            "jobs": self.jobs,
            "strategy_selection": self.strategy_names or "all",
            "eval_every": self.eval_every,
            "wall_seconds": round(self.wall_seconds, 3),
            "cases": self.cases,
            "clean_rejections": self.outcomes["rejected"],
            "accepted": self.outcomes["accepted"],
            "foreign_exceptions": self.outcomes["foreign"],
            "foreign_by_command": dict(self.by_command.most_common()),
            "commands_run": dict(self.commands_run.most_common()),
            "throughput": self.throughput(),
            "over_1s": self.slow,
            "timeouts": self.outcomes["timeout"],
            "outcomes": {outcome: self.outcomes[outcome] for outcome in OUTCOMES},
            "generator_errors": self.outcomes["generator-error"],
            "slowest": {**self.slowest, "seconds": round(self.slowest["seconds"], 4)},
            "memory": {
                "max_input_bytes": self.max_input_bytes,
                "rss_increase_bytes": self.rss_increase,
                "bound_bytes": self.memory_bound,
                "within_bound": self.rss_increase <= self.memory_bound,
                "workers_kib": {str(pid): v for pid, v in self.rss_kib.items()},
                "rss_raisers": self.rss_raisers,
                "traced_peak": self.traced_peak,
            },
            "strategies": {name: asdict(row) for name, row in sorted(self.strategies.items())},
            "violation_codes": dict(self.codes.most_common()),
            "foreign": self.foreign,
            "slow_cases": [
                {**case, "seconds": round(case["seconds"], 3)} for case in self.slowest_cases()
            ],
            "generator_error_cases": self.generator_errors,
            "seeds": self.seeds,
        }


def _mib(count: int) -> str:
    return f"{count / (1 << 20):,.1f} MiB"


def _oracle_line(summary: Summary) -> str:
    """What ran on the accepted files, and what an accepted case costs."""
    run = summary.commands_run
    speed = summary.throughput()
    evals = f"eval {run['eval']:,} (every case of {', '.join(sorted(IMAGE_TARGETED))}"
    evals += f", 1 in {summary.eval_every} of the others)"
    return (
        f"oracle                info {run['info']:,}, info --json {run['info --json']:,}, "
        f"decode {run['decode']:,}, {evals}; accepted cases {speed['accepted_ms_per_case']} ms "
        f"each ({speed['accepted_per_second_per_worker']}/s per worker)"
    )


def render(summary: Summary, reproduce_hint: str = "") -> str:
    """The human summary printed at the end of a run."""
    rate = summary.cases / summary.wall_seconds if summary.wall_seconds else 0.0
    slowest = summary.slowest
    within = summary.rss_increase <= summary.memory_bound
    per_command = ", ".join(f"{c} {n:,}" for c, n in summary.by_command.most_common()) or "none"
    lines = [
        f"cases run             {summary.cases:,} in {summary.wall_seconds:.1f} s "
        f"({rate:,.0f}/s, {summary.jobs} worker(s), run seed {summary.run_seed}, "
        f"{len(summary.seeds)} seeds)",
        f"clean rejections      {summary.outcomes['rejected']:,}",
        f"accepted and decoded  {summary.outcomes['accepted']:,}",
        f"foreign exceptions    {summary.outcomes['foreign']:,} ({len(summary.foreign)} distinct)",
        f"foreign by command    {per_command}",
        _oracle_line(summary),
        f"slow cases            {summary.slow:,} (over {SLOW_S:g} s, {SLOW_S + EVAL_SECONDS:g} s "
        f"where eval ran; stopped by a watchdog: "
        f"{summary.outcomes['timeout']})",
        f"slowest case          {slowest['seconds']:.3f} s "
        f"({slowest.get('case')}, {slowest.get('strategy', '-')})",
        f"memory                peak RSS +{_mib(summary.rss_increase)} over warm-up (worst "
        f"worker); bound {_mib(summary.memory_bound)} = {MEMORY_FACTOR} x "
        f"{summary.max_input_bytes:,} B + {_mib(MEMORY_SLACK)} + eval's arena "
        f"{EVAL_MEMORY_MIB} MiB: "
        f"{'within' if within else 'EXCEEDED'}",
    ]
    if summary.rss_raisers:
        top = summary.rss_raisers[0]
        rise = _mib(1024 * top["rss_growth_kib"])
        lines.append(f"{'':22}largest rise +{rise} in case {top['case']} ({top['strategy']})")
    if summary.traced_peak["case"] is not None:
        lines.append(
            f"traced peak per case  {_mib(summary.traced_peak['bytes'])} "
            f"({summary.traced_peak['case']})"
        )
    if summary.outcomes["generator-error"]:
        lines.append(f"GENERATOR ERRORS      {summary.outcomes['generator-error']} (tool bugs)")
    lines += [
        "",
        f"{'strategy':<17} {'cases':>7} {'rejected':>9} {'accepted':>9} {'foreign':>8} "
        f"{'>1 s':>5} {'slowest':>9} {'mean':>8}",
    ]
    for name, row in sorted(summary.strategies.items()):
        mean = 1000 * row.seconds / row.cases if row.cases else 0.0
        lines.append(
            f"{name:<17} {row.cases:>7,} {row.rejected:>9,} {row.accepted:>9,} "
            f"{row.foreign:>8,} {row.slow:>5,} {row.slowest:>8.3f}s {mean:>6.2f}ms"
        )
    codes = ", ".join(f"{code} {n:,}" for code, n in summary.codes.most_common(12))
    lines += ["", f"top rejection codes: {codes}"]
    lines += _foreign_lines(summary, reproduce_hint)
    for case in summary.slowest_cases()[:SHOW_TRACEBACKS]:
        lines.append(
            f"SLOW: case {case['case']} ({case['strategy']}) {case['seconds']:.2f} s "
            f"{case['outcome']} {case['note']}".rstrip()
        )
    return "\n".join(lines)


def _foreign_lines(summary: Summary, reproduce_hint: str) -> list[str]:
    """Every distinct finding with its count and first case; the first few with tracebacks."""
    lines = []
    if summary.foreign:
        lines += ["", "distinct findings (count, first case):"]
    for sign, entry in summary.foreign.items():
        lines.append(f"  {entry['count']:>8,}  {entry['first_case']:<12} {sign}")
    for sign, entry in list(summary.foreign.items())[:SHOW_TRACEBACKS]:
        lines += [
            "",
            f"FOREIGN x{entry['count']}: {sign}",
            f"  first: case {entry['first_case']} ({entry['strategy']}, seed "
            f"{entry['seed']}); reproduce: {reproduce_hint}--reproduce "
            f"{entry['first_case']}",
            entry["traceback"].rstrip(),
        ]
    return lines
