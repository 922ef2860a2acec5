"""Setup engine: pinned upstream checkouts with the kit's patch series applied, one commit per patch.

`python -m scripts --help` lists the commands; `scripts.engine.setup_upstream` is the entry for code.
"""
