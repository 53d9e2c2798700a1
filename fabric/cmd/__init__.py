"""Entry points: one ``main()`` per launcher in ``bin/``."""

import warnings

# fabric chose eventlet knowingly (DESIGN.md §3); its deprecation notice on
# every command and worker start would only be noise for operators.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
# eventlet imports dnspython, whose DNSSEC module touches DSA at import time; cryptography
# 51 warns about DSA there. Nothing in fabric uses DSA: the notice would only be noise on
# every command's standard error (which operators and tests read as one clear line).
warnings.filterwarnings("ignore", message=r"DSA is deprecated", module=r"dns\.")
