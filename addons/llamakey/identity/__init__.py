"""Who is calling: identity sources, each turning a presented credential into a user.

Like mitmproxy's `proxyauth.py` with its `Validator` classes: one small class per way of
proving who you are. Master keys now; JWT identities plug in beside them.
"""

from llamakey.identity.master_keys import MasterKeys

__all__ = ["MasterKeys"]
