"""python -m kiosk.payments.sandbox: same as `kiosk sandbox`."""

import sys

from kiosk.payments.sandbox.cli import main

sys.exit(main())
