"""``python -m nplstm``: the command line."""

from .cli import main

raise SystemExit(main())
