"""Block storage: the volume worker (``fabric-volume``), its RPC client and the API other services import."""
