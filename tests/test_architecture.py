"""The layer rules (docs/architecture.md, "Layers") hold, and ``lint-imports`` catches a
break of each: a copy of the package gets one deliberate violation and must fail."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from roost import domains

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the package under ``tree/src`` with ``tree/pyproject.toml``."""
    assert LINT_IMPORTS.exists(), "lint-imports is missing: pip install -e '.[dev]'"
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "src" / "roost", tmp_path / "src" / "roost",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_clean_tree_keeps_every_contract(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _contract_name(contract_id: str) -> str:
    return next(c["name"] for c in CONTRACTS["contracts"] if c["id"] == contract_id)


VIOLATIONS = [
    # (file to change, line to add, contracts that must break)
    pytest.param("tasks/service.py", "import fastapi", ["web-adapters", "services-without-web"],
                 id="service-imports-fastapi"),
    pytest.param("identity/accounts.py", "from roost.http import deps", ["web-adapters"],
                 id="identity-service-imports-http"),
    pytest.param("chat/models.py", "import roost.http.auth", ["services-without-web"],
                 id="model-imports-http"),
    pytest.param("llm/types.py", "import roost.chat", ["layers"], id="llm-imports-chat"),
    pytest.param("knowledge/chunking.py", "import roost.chat.schemas", ["layers"],
                 id="knowledge-imports-chat"),
    pytest.param("audit/service.py", "import roost.identity.tenancy", ["layers"],
                 id="floor-imports-higher-domain"),
    pytest.param("http/deps.py", "import roost.identity.tenancy", ["layers"],
                 id="web-layer-imports-domain"),
    pytest.param("db/base.py", "import roost.domains", ["layers"], id="db-imports-domain-list"),
    pytest.param("ledgerless/__init__.py", "", ["layers"], id="unplaced-new-domain"),
]


@pytest.mark.parametrize(("path", "line", "broken"), VIOLATIONS)
def test_a_violation_breaks_its_contract(tree: Path, path: str, line: str, broken: list[str]) -> None:
    target = tree / "src" / "roost" / path
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as f:
        f.write(f"\n{line}\n")
    result = lint(tree)
    assert result.returncode != 0, result.stdout
    report = " ".join(result.stdout.split())  # names wrap at 80 columns
    for contract_id in broken:
        assert f"{_contract_name(contract_id)} BROKEN" in report, (contract_id, result.stdout)


def test_the_layers_list_the_domains_in_their_order() -> None:
    """``roost.domains.DOMAINS`` is in layer order, lowest first, as the contract is."""
    layers = next(c for c in CONTRACTS["contracts"] if c["id"] == "layers")["layers"]
    names = {d.name for d in domains.DOMAINS}
    rank = {}
    for position, layer in enumerate(reversed(layers)):  # lowest first
        for module in layer.replace("|", ":").split(":"):
            if module.strip() in names:
                rank[module.strip()] = position
    assert set(rank) == names, "every domain of roost.domains is placed in the layers contract"
    ranks = [rank[d.name] for d in domains.DOMAINS]
    assert ranks == sorted(ranks), f"DOMAINS order {[d.name for d in domains.DOMAINS]} breaks the layers"


def test_every_domain_entry_resolves() -> None:
    """What roost.domains names exists; start-up is a domain hook, never a router lifespan."""
    from fastapi import APIRouter

    assert all(isinstance(router, APIRouter) for router in domains.routers())
    lifespans = [str(path.relative_to(ROOT)) for path in (ROOT / "src" / "roost").rglob("*.py")
                 if re.search(r"APIRouter\([^)]*lifespan\s*=", path.read_text(encoding="utf-8"))]
    assert not lifespans, f"list start-up in roost.domains, not APIRouter(lifespan=...): {lifespans}"
    assert domains.resolvers() and all(callable(r) for r in domains.resolvers())
    assert all(callable(hook) for hook in domains.startup_hooks())
    for module in domains.job_modules():
        domains.load(module)
    for domain in domains.DOMAINS:
        if domain.cli:
            assert callable(domains.load(domain.cli))
    assert "users" in domains.import_models().tables
