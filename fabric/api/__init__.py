"""fabric's HTTP API: Identity v3, Compute v2.1, Image v2 and Network v2.0 subsets
plus fabric's own admin endpoints, as one Falcon WSGI application.

Build it with :func:`fabric.api.app.build_app`; serve it with
:func:`fabric.api.server.serve` (eventlet.wsgi).
"""
