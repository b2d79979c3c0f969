"""spec/FORMAT.md against the code: syntax blocks, error codes, limits and the revision.

The spec is normative, so these tests hold it to what eprpipe does: every byte structure the
reader and writer share is printed verbatim in the spec, and the spec's table of error codes
lists exactly the codes eprpipe can report. Fast and torch-free.
"""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

import pytest

from eprpipe.format import structures
from eprpipe.format.limits import DEFAULT_LIMITS
from eprpipe.format.syntax import Field

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "spec" / "FORMAT.md"
PACKAGE = ROOT / "eprpipe"
REVISION = 8

# Calls that take an error code as a positional argument: name -> index of that argument.
_CODE_ARGUMENTS = {"_graph_error": 1, "fail": 1, "Field": 4}
_CODE = re.compile(r"[a-z]+(?:-[a-z]+)*")


def spec_text() -> str:
    return SPEC.read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """The body of the `## N. heading` section, up to the next `## ` heading."""
    match = re.search(rf"^## \d+\. {re.escape(heading)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, f"spec has no section '{heading}'"
    return match.group(1)


def spec_error_codes() -> list[str]:
    """The first column of the error-code table, in order."""
    rows = re.findall(r"^\| `([^`]+)` \|", _section(spec_text(), "Error codes"), re.M)
    assert rows, "the error-code table is empty"
    return rows


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _string(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _defaults(arguments: ast.arguments) -> list[tuple[str, ast.AST | None]]:
    positional = [*arguments.posonlyargs, *arguments.args]
    pairs = list(
        zip(
            positional[len(positional) - len(arguments.defaults) :], arguments.defaults, strict=True
        )
    )
    pairs += list(zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True))
    return [(arg.arg, default) for arg, default in pairs]


def codes_in_source(path: Path) -> dict[str, set[str]]:
    """Error codes written in one module, each with the kinds of site that use it.

    Sites: `code="..."` keywords, `code: str = "..."` annotated defaults, `code="..."` parameter
    defaults (functions and lambdas), the code argument of `_graph_error`, `fail` and `Field`,
    and the first argument of `Violation(...)` in validate.py.
    """
    found: dict[str, set[str]] = {}

    def add(value: str | None, site: str) -> None:
        if value is not None:
            found.setdefault(value, set()).add(site)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            name = _call_name(node)
            for keyword in node.keywords:
                if keyword.arg == "code":
                    add(_string(keyword.value), "keyword")
            index = _CODE_ARGUMENTS.get(name or "")
            if index is not None and len(node.args) > index:
                add(_string(node.args[index]), f"{name} argument")
            if name == "Violation" and path.name == "validate.py" and node.args:
                add(_string(node.args[0]), "Violation")
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.target.id == "code":
                add(_string(node.value), "field default")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for name, default in _defaults(node.args):
                if name == "code":
                    add(_string(default), "parameter default")
    return found


def codes_in_package() -> dict[str, set[str]]:
    """Every error code eprpipe can report, with where it is written (module: site kinds)."""
    codes: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for code, sites in codes_in_source(path).items():
            codes.setdefault(code, set()).update(f"{path.name}: {site}" for site in sites)
    # The syntax layer's fallback is never raised: every field with a rule names its code.
    codes.pop(_field_default_code(), None)
    return codes


def _field_default_code() -> str:
    return Field("x", "u8", "").code


# --- (a) the syntax blocks ------------------------------------------------------------------


@pytest.mark.parametrize("structure", structures.ALL, ids=lambda s: s.name)
def test_every_structure_is_printed_verbatim(structure: structures.Structure) -> None:
    block = f"```\n{structure.render()}\n```"
    assert block in spec_text(), f"spec/FORMAT.md lacks the current render() of {structure.name}"


def test_no_structure_is_printed_twice() -> None:
    text = spec_text()
    for structure in structures.ALL:
        assert text.count(f"\n{structure.name} {{") == 1, structure.name


# --- (b) the error codes --------------------------------------------------------------------


def test_every_field_rule_names_a_code() -> None:
    """So the syntax layer's fallback code can never reach a user (it is not in the table)."""
    for structure in structures.ALL:
        for item in structure.fields:
            if item.rule is not None:
                assert item.code != _field_default_code(), f"{structure.name}.{item.name}"
                assert _CODE.fullmatch(item.code), item.code


def test_the_collector_sees_the_known_sites() -> None:
    codes = codes_in_package()
    assert {"bad-magic", "truncated", "graph-domain", "bad-manifest", "graph-invalid"} <= set(codes)
    assert {item.code for s in structures.ALL for item in s.fields if item.rule} <= set(codes)


def test_every_code_eprpipe_reports_is_in_the_spec_table() -> None:
    table = set(spec_error_codes())
    missing = {
        code: sorted(sites) for code, sites in codes_in_package().items() if code not in table
    }
    assert not missing, f"codes used in eprpipe but missing from the spec's table: {missing}"


def test_every_code_in_the_spec_table_is_used() -> None:
    stale = set(spec_error_codes()) - set(codes_in_package())
    assert not stale, f"codes in the spec's table that eprpipe never reports: {sorted(stale)}"


def test_the_error_code_table_is_well_formed() -> None:
    codes = spec_error_codes()
    assert len(codes) == len(set(codes)), "a code is listed twice"
    assert all(_CODE.fullmatch(code) for code in codes), codes
    rows = re.findall(r"^\| `[^`]+` \|.*$", _section(spec_text(), "Error codes"), re.M)
    assert all(row.count("|") == 5 for row in rows), "every row has code, rules, section, offset"


# --- (c) the revision -----------------------------------------------------------------------


def test_header_names_the_revision_and_a_date() -> None:
    head = "\n".join(spec_text().splitlines()[:5])
    match = re.search(r"document revision (\d+), (\d{4}-\d{2}-\d{2})", head)
    assert match, "the status line names no document revision and date"
    assert int(match.group(1)) == REVISION
    assert "**normative**" in head


def test_history_ends_with_this_revision() -> None:
    rows = re.findall(r"^\| (\d+) \(([a-z]+)\)", _section(spec_text() + "\n## ", "History"), re.M)
    assert rows, "the history table is empty"
    assert [int(number) for number, _ in rows] == list(range(1, REVISION + 1))
    assert rows[-1] == (str(REVISION), "normative")


# --- the resource limits --------------------------------------------------------------------


def _quantity(text: str) -> int:
    """A default as the spec writes it: "2^32 bytes", "16 MiB", "512"."""
    match = re.fullmatch(r"(?:2\^(\d+)|(\d+)( MiB)?)( bytes)?", text)
    assert match, f"cannot read the limit {text!r}"
    power, number, mebibytes, _ = match.groups()
    if power is not None:
        return 1 << int(power)
    return int(number) << (20 if mebibytes else 0)


def test_the_limits_table_gives_eprpipes_defaults() -> None:
    table = dict(
        re.findall(r"^\|[^|]*\| `(\w+)` +\| ([^|]+?) +\|$", _section(spec_text(), "Limits"), re.M)
    )
    assert set(table) == {item.name for item in fields(DEFAULT_LIMITS)}
    for name, text in table.items():
        assert _quantity(text) == getattr(DEFAULT_LIMITS, name), name
