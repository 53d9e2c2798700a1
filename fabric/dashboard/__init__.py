"""The web dashboard: tenants and operators run the cloud from a browser.

A client of the public API only (it imports nothing from :mod:`fabric.db`),
so it runs wherever the API is reachable: as its own process
(``fabric-dashboard``, which needs the API's address and nothing else) or
inside ``fabric-all``. Served under ``/dashboard/``.
"""
