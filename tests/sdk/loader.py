"""Load the Python SDK the way its users do: by path, from `sdk/python/native1api_client.py`.

It is a copy-me file, not an installed package. Test modules write::

    if TYPE_CHECKING:
        import native1api_client as n1  # mypy sees the file through `mypy sdk/python tests/sdk`
    else:
        n1 = load_sdk()
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
SDK_PATH = ROOT / "sdk" / "python" / "native1api_client.py"
MODULE_NAME = "native1api_client"


def load_sdk() -> ModuleType:
    """The SDK module, loaded once (registered in `sys.modules` so every test sees one copy)."""
    module = sys.modules.get(MODULE_NAME)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(MODULE_NAME, SDK_PATH)
    assert spec is not None and spec.loader is not None, SDK_PATH
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[MODULE_NAME]
        raise
    return module
