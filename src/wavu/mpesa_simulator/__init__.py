"""A local stand-in for Safaricom's Daraja API (`wavu mpesa-simulator`).

A standard-library HTTP server that speaks the documented Daraja endpoints (OAuth, STK push and query,
C2B register URL and simulate, Transaction Status, B2C and Reversal) and posts the documented
callbacks to the URLs it is given, with scripted customer behaviour (cancelled, wrong PIN, timeout,
duplicate, late and lost callbacks …) and payouts (insufficient balance, queue timeout …).
See docs/mpesa-simulator.md. It is a Django app only to host its command (`management/`, no models);
the server itself imports nothing from Django or Wavu's apps.

    from wavu.mpesa_simulator import Config, SimulatorServer
    server = SimulatorServer(("127.0.0.1", 0), Config()).start()   # server.base_url
    ...
    server.stop()
"""

from wavu.mpesa_simulator.server import SimulatorServer
from wavu.mpesa_simulator.state import Config, State

__all__ = ["Config", "SimulatorServer", "State"]
