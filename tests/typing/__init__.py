"""Type-only tests: mypy checks these modules (``files`` includes ``tests``); pytest never
collects them (``check_*.py``), and nothing runs them."""
