"""Entry points: one ``main()`` per launcher in ``bin/``."""
