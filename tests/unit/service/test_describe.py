

def test_lifecycle_hooks_and_periodic_tasks_are_not_rpc_methods():
    from fabric import config
    from fabric.manager import Manager
    from fabric.periodic import periodic_task
    from fabric.rpc.server import public_methods

    class Sample(Manager):
        topic = "sample"

        def work(self, ctx):
            return "done"

        @periodic_task(spacing=1)
        def tick(self, ctx):
            pass

    methods = public_methods(Sample(config.Settings(), host="h1"))
    assert "work" in methods and "describe" in methods
    assert not {"init_host", "cleanup_host", "capabilities", "tick", "rpc_private"} & set(methods)
