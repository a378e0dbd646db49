"""``python -m tracker_zmq``: the same as the ``tracker-zmq`` command."""

import sys

from tracker_zmq.cli import main

sys.exit(main())
