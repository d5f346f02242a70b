"""Entry script for people who run mitmproxy their own way:

    mitmdump -s addons/entry.py --set lmk_config=lmk_config.toml
    mitmweb  -s addons/entry.py --set lmk_config=lmk_config.toml

mitmproxy imports this file as a loose script, so it finds the package either installed
(`pip install -e .`) or right here beside it (`addons/` is the source root).
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("llamakey") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from llamakey import filemodes
from llamakey.gateway import Gateway, gateway_addons
from llamakey.leafcert import ExactLeafNames
from llamakey.listencheck import ListenCheck
from llamakey.state import GatewayState

# Files this process creates from now on (the audit database, bundles) are 0600; the CA's
# public files set their own mode. A -w file mitmproxy opened before: SaveFileMode.
filemodes.restrict_umask()

_state = GatewayState()
# ListenCheck: plain mitmdump must listen where proxy.listen_host/port say, or it stops.
addons = [
    filemodes.SaveFileMode(),
    Gateway(gateway_addons(_state)),
    ExactLeafNames(),
    ListenCheck(_state),
]
