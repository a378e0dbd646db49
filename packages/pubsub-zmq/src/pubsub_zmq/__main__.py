"""``python -m pubsub_zmq``: the same as the ``pubsub-zmq`` command."""

import sys

from .cli import main

sys.exit(main())
