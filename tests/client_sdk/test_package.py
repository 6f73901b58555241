"""Package contracts: dependencies, optional cryptography, documentation, typing marker."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import client_sdk

MODULES = [
    "client_sdk",
    "client_sdk.auth",
    "client_sdk.cli",
    "client_sdk.client",
    "client_sdk.connection",
    "client_sdk.errors",
    "client_sdk.joining",
    "client_sdk.port",
    "client_sdk.pubsub",
    "client_sdk.rpc",
    "client_sdk.session",
    "client_sdk.states",
    "client_sdk.sync",
    "client_sdk.transport",
    "client_sdk.values",
]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)


def test_sdk_never_imports_the_broker_or_cryptography_eagerly() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('broker', 'cryptography', 'redis'))\n"
        + "assert not bad, bad\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


def test_sdk_works_without_cryptography_until_cryptosign_is_used() -> None:
    code = (
        "import sys\n"
        "sys.modules['cryptography'] = None\n"
        "import client_sdk\n"
        "client_sdk.TicketAuth('joe', 'x')\n"
        "client_sdk.WampCraAuth('joe', 'x').sign({'challenge': 'c'})\n"
        "try:\n"
        "    client_sdk.CryptosignAuth('joe', '00' * 32)\n"
        "except client_sdk.AuthError as exc:\n"
        "    assert 'cryptography' in str(exc)\n"
        "else:\n"
        "    raise SystemExit('expected AuthError')\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


def test_package_ships_py_typed() -> None:
    assert (Path(client_sdk.__file__).parent / "py.typed").is_file()


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__doc__, module_name
    assert hasattr(module, "__all__"), module_name
    missing = []
    for name in module.__all__:
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                target = member.fget if isinstance(member, property) else member
                if inspect.isfunction(target) and not target.__doc__:
                    missing.append(f"{name}.{attr}")
    assert not missing, f"{module_name}: no docstring for {missing}"
