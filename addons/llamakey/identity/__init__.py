"""Who is calling: identity sources, each turning a presented credential into a user.

Like mitmproxy's `proxyauth.py` with its `Validator` classes: one small class per way of
proving who you are: master keys, and bearer JWTs from the team's identity provider.
"""

from llamakey.identity.jwt import JwtIdentities
from llamakey.identity.master_keys import MasterKeys
from llamakey.identity.outcome import Outcome, refused

__all__ = ["JwtIdentities", "MasterKeys", "Outcome", "refused"]
