"""``python -m broker.auth hash``: print the salted hash of a ticket read from stdin.

``python -m broker.auth keypair``: print a new Ed25519 key pair for cryptosign (hex).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

from .secrets import DEFAULT_ITERATIONS, hash_ticket


def main(argv: Sequence[str] | None = None) -> int:
    """Run the helper; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m broker.auth")
    sub = parser.add_subparsers(dest="command", required=True)
    hashing = sub.add_parser("hash", help="hash a ticket (read from stdin or prompted)")
    hashing.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    sub.add_parser("keypair", help="generate an Ed25519 key pair for cryptosign")
    args = parser.parse_args(argv)
    if args.command == "hash":
        if sys.stdin.isatty():
            ticket = getpass.getpass("ticket: ")
        else:
            ticket = sys.stdin.readline().rstrip("\n")
        if not ticket:
            print("empty ticket", file=sys.stderr)
            return 2
        print(hash_ticket(ticket, iterations=args.iterations))
        return 0
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    print(f"private (keep secret, client side): {key.private_bytes_raw().hex()}")
    print(f"public  (goes in the config):       {key.public_key().public_bytes_raw().hex()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
