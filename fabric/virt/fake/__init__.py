"""In-memory virt driver for unit and scale tests."""

from fabric.virt.fake.driver import FakeDriver

__all__ = ["FakeDriver"]
