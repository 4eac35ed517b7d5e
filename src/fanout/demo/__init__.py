"""The embedded demo API and fault server, for demos, tests and benchmarks.

Everything is deterministic and offline, and it binds loopback only. The
endpoints are listed in :mod:`fanout.demo.app` (and served at ``/``): the
data in :mod:`~fanout.demo.data`, the normal endpoints in
:mod:`~fanout.demo.content`, those that misbehave on purpose in
:mod:`~fanout.demo.faults`, the servers in :mod:`~fanout.demo.servers`.
"""

from fanout.demo.app import make_app
from fanout.demo.endpoint import STATS_KEY
from fanout.demo.servers import DemoServer, ServerThread, serve_forever
from fanout.demo.stats import Stats

__all__ = ["STATS_KEY", "DemoServer", "ServerThread", "Stats", "make_app", "serve_forever"]
