"""Entry script for people who run mitmproxy their own way:

    mitmdump -s addons/entry.py --set lmk_config=lmk_config.toml
    mitmweb  -s addons/entry.py --set lmk_config=lmk_config.toml

mitmproxy imports this file as a loose script, so it finds the package either installed
(`pip install -e .`) or right here beside it.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("llamakey") is None:
    _here = Path(__file__).resolve().parent
    _spec = importlib.util.spec_from_file_location(
        "llamakey", _here / "__init__.py", submodule_search_locations=[str(_here)]
    )
    assert _spec is not None and _spec.loader is not None
    sys.modules["llamakey"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["llamakey"])

from llamakey.gateway import gateway_addons

addons = gateway_addons()
