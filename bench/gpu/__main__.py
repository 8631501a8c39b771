"""``python -m bench.gpu``: see ``bench/gpu/run.py`` (the code lives there so that spawned processes can import it)."""

from bench.gpu.run import main

raise SystemExit(main())
