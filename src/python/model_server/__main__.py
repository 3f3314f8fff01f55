"""`python -m model_server …`: the same command as the PEX (see model_server.main)."""

from model_server.main import main

raise SystemExit(main())
