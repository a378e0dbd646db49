"""The ``pubsub-zmq`` command: CURVE key generation.

Not pure (writes files). ``pubsub-zmq keygen`` prints a new key pair; with ``--out DIR
--name NAME`` it writes ``NAME.key`` (public) and ``NAME.key_secret`` (both keys) in the
zmq.auth certificate format, readable with :func:`pubsub_zmq.load_keypair`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import zmq.auth

from .curve import generate_keypair

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(prog="pubsub-zmq", description="pubsub-zmq tools")
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="generate a CURVE key pair")
    keygen.add_argument("--out", type=Path, help="write certificate files in this directory")
    keygen.add_argument("--name", default="node", help="file name stem (default: node)")
    args = parser.parse_args(argv)
    if args.out is None:
        pair = generate_keypair()
        print(f"public: {pair.public}")
        print(f"secret: {pair.secret}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    public_file, secret_file = zmq.auth.create_certificates(str(args.out), args.name)
    Path(secret_file).chmod(0o600)
    print(f"public key file: {public_file}")
    print(f"secret key file: {secret_file} (keep it private)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
