"""Routing a catalogued model to its deployments (README "Model catalogue and routing").

- `llamakey.routing.balancer`: the order in which a request tries the deployments (smooth
  weighted round-robin, deployments in cool-down last) and each deployment's cool-down;
- `llamakey.routing.relay`: the loopback relay that sends a routed request to one deployment
  after the other until one answers, and streams that answer back unbuffered.
"""

from llamakey.routing.balancer import Balancer, retry_after_seconds
from llamakey.routing.relay import Attempt, Relay, Route

__all__ = ["Attempt", "Balancer", "Relay", "Route", "retry_after_seconds"]
