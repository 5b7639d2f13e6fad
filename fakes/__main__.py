"""``python -m fakes {workers-ai,openrouter,together} --port N --token T``: see `fakes.cli`."""

from fakes.cli import main

raise SystemExit(main())
