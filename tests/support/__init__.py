"""The test and dev harness: what the tests, the benchmarks, the demo and the soak share.

* :mod:`tests.support.proc`: the one process driver (start a child, wait for its ready
  line, stop it with SIGTERM then SIGKILL, always cleaned up), ``free_port``,
  ``wait_until``, and the two kinds of node process built on it: a command-pipe node
  (:class:`~tests.support.proc.CommandNode`) and a standalone ``python -m tracker_zmq
  node`` (:class:`~tests.support.proc.CliNode`);
* :mod:`tests.support.node`: the node side of a command-pipe node: its command line, its
  PubSub and Tracker, and the JSON-lines command loop (``tests/pubsub_node.py``,
  ``tests/tracker_node.py`` and ``bench/tracker_bench_node.py`` are built on it);
* :mod:`tests.support.aio`: ``run`` and ``until`` for asyncio test bodies.
* :mod:`tests.support.previous`: the previous release (``tests/previous_release.py``),
  installed from the repository's history into a cached virtualenv, whose interpreter
  runs old nodes and clients for the mixed-version tests (``tests/test_rolling.py``).

Scripts outside ``tests/`` (``bench/``, ``scripts/``) put the repository root on their
path to import it; the package tests under ``packages/`` do not use it.
"""
