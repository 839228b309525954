"""``python -m lindit.cli`` (as ``accelerate launch -m lindit.cli distill ...`` runs it): the ``lindit`` command."""

import sys

from . import main

sys.exit(main())
