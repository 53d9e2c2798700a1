"""fabric: an AMQP message-driven cloud fabric (distribution ``cloudfabric``)."""

__version__ = "0.1.0"
