"""media_pipeline.contract: what signaling and the media worker share (error codes, the clock)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from media_pipeline import contract
from signaling import protocol

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("media_pipeline", "signaling", "roleplay", "lingecho")
ERROR_CODE_SHAPE = re.compile(r"ERR_[A-Z_]+")


def error_code_literals(path: Path) -> list[str]:
    """``"ERR_…"`` string literals in one module (prose in docstrings and comments is not one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.value}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and ERROR_CODE_SHAPE.fullmatch(node.value)
    ]


def test_no_module_but_the_contract_spells_an_error_code():
    modules = [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]
    assert len(modules) > 50  # the tree was found
    others = [path for path in modules if path != ROOT / "media_pipeline" / "contract.py"]
    literals = [hit for path in others for hit in error_code_literals(path)]
    assert literals == []


def test_the_error_codes_are_their_wire_values_and_signaling_shares_them():
    assert protocol.ErrorCode is contract.ErrorCode
    assert contract.ErrorCode.RATE_LIMIT == "ERR_RATE_LIMIT" and str(contract.ErrorCode.ASR_FAILED) == "ERR_ASR_FAILED"
    assert protocol.ERROR_CODES == tuple(code.value for code in contract.ErrorCode) and len(protocol.ERROR_CODES) == 9


def test_there_is_one_clock_for_envelopes():
    assert protocol.now_ms is contract.now_ms
    assert protocol.envelope("ping", "s", {})["timestamp"] >= contract.now_ms() - 1000
