"""Run by test_monkey_patched.py: RPC in a monkey-patched process, as launchers run it.

Prints one line per check passed; exits non-zero on the first failure.
"""

import eventlet

eventlet.monkey_patch()

import subprocess  # noqa: E402
import sys  # noqa: E402

from fabric import config, rpc  # noqa: E402
from fabric.context import RequestContext  # noqa: E402
from fabric.exception import Unroutable  # noqa: E402


class Manager:
    def __init__(self):
        self.tokens = set()

    def echo(self, ctx, value):
        return value

    def apply(self, ctx, token):
        eventlet.sleep(0.001)
        self.tokens.add(token)


def main(url: str, vhost: str) -> int:
    settings = config.load(None).replace(rpc={"transport_url": url, "call_timeout": 10})
    transport = rpc.get_transport(settings.rpc)
    manager = Manager()
    server = rpc.RPCServer(transport, topic="patched", host="h1", endpoint=manager)
    server.start()
    client = rpc.RPCClient(transport, rpc.Target("patched"))
    ctx = RequestContext()
    assert client.call(ctx, "echo", value="hi") == "hi"
    print("call ok", flush=True)
    try:
        rpc.RPCClient(transport, rpc.Target("nobody")).call(ctx, "echo", value=1)
        return 1
    except Unroutable:
        print("unroutable ok", flush=True)
    results = []
    pool = eventlet.GreenPool(20)
    for i in range(100):
        pool.spawn(lambda i=i: results.append(client.call(ctx, "echo", value=i)))
    pool.waitall()
    assert sorted(results) == list(range(100))
    print("concurrent calls ok", flush=True)
    for i in range(300):
        client.cast(ctx, "apply", token=i)
        if i == 100:
            subprocess.run(["rabbitmqctl", "-q", "close_all_connections", "--vhost", vhost,
                            "--limit", "100", "test"], check=True, capture_output=True)
    deadline = eventlet.hubs.get_hub().clock() + 30
    while len(manager.tokens) < 300 and eventlet.hubs.get_hub().clock() < deadline:
        eventlet.sleep(0.01)
    assert manager.tokens == set(range(300)), f"handled {len(manager.tokens)} of 300"
    assert client.call(ctx, "echo", value="after") == "after"
    print("casts across a reconnect ok", flush=True)
    server.stop()
    server.wait(5)
    transport.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
