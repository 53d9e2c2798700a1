"""Entry points: one ``main()`` per launcher in ``bin/``."""

import warnings

# fabric chose eventlet knowingly (DESIGN.md §3); its deprecation notice on
# every command and worker start would only be noise for operators.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
