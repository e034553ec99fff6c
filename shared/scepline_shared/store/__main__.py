"""`python -m scepline_shared.store upgrade DATABASE_URL`: migrate a store to head.

For deployments that migrate in a separate step (an init container, a
release job) rather than at service start-up.
"""

from __future__ import annotations

import sys

from scepline_shared.store.migrate import upgrade_to_head_sync

__all__ = ["main"]

_USAGE = "usage: python -m scepline_shared.store upgrade DATABASE_URL"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "upgrade":
        print(_USAGE, file=sys.stderr)
        return 2
    upgrade_to_head_sync(args[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
