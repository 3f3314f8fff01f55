"""`python -m model_server …`: the same command as the PEX (see model_server.main)."""

from tensorflow_noise import import_tensorflow_quietly

import_tensorflow_quietly()  # before model_server.main imports it: without TensorFlow's start-up noise

from model_server.main import main  # noqa: E402

raise SystemExit(main())
