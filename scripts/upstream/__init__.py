"""Setup engine: pinned upstream checkouts with the kit's patch series applied, one commit per patch.

Commands (`python -m scripts <command>`): setup (`setup_upstream`), status, check-patches
(`checkpatches`), refresh-patches (`refresh`), install-requirements (`envinstall`); their shared
flags and error handling are in `command`. `config` (upstreams.yaml, `REPO_ROOT`) and `errors` are
what the other subpackages of `scripts` may use.
"""
