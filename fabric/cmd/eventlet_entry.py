"""The one place eventlet monkey patching happens.

Every worker launcher (``fabric/cmd/<worker>.py``) imports this module as its
very first statement, so the standard library is green before anything else
(database drivers, kombu, logging handlers) is imported. Nothing else in
fabric patches; library code, ``fabric-manage`` and tests run unpatched.
"""

import os

# eventlet's green resolver imports dnspython (and through it the cryptography package) at
# every start: about a fifth of a worker's start-up. fabric's workers name their peers by address or in
# /etc/hosts, which the system resolver answers at once; as in Neutron, it is off unless the
# operator sets EVENTLET_NO_GREENDNS=no (a worker that must resolve names over the network then
# resolves without stalling its other green threads).
os.environ.setdefault("EVENTLET_NO_GREENDNS", "yes")

import eventlet  # noqa: E402

# Everything, threads included: SQLAlchemy's pool and logging's locks must be
# green, or a green thread blocking on one would stall the whole hub.
eventlet.monkey_patch()

# psycopg's C wait function blocks in poll(2), stalling every green thread for the
# length of each query; its select()-based wait is green once select is patched.
# (psycopg only detects gevent's patching by itself.) Must be set before psycopg
# is first imported, which is why it lives here.
os.environ.setdefault("PSYCOPG_WAIT_FUNC", "wait_select")
