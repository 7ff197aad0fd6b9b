"""A module for hypercorn's command line: `hypercorn asgi_app:asgi --worker-class trio`.

Used by tests/test_http_hypercorn_cli.py; not a test module itself.
"""

from tether import RpcManager
from tether.testing import IpcConformance, RpcConformance
from tether.transports.http import HttpApp

manager: RpcManager = RpcConformance().backend_manager()
asgi = HttpApp(manager, ipc=IpcConformance().backend_ipc())
