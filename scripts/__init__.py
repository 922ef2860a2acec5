"""The project's commands, one subpackage per concern; `python -m scripts --help` lists them.

- `upstream/`: the setup engine: pinned upstream checkouts with the kit's patch series applied,
  one commit per patch (setup, status, check-patches, refresh-patches, install-requirements);
  `scripts.upstream.setup_upstream.setup_upstream` is the entry for code.
- `cam/`: `make cam`, an upstream's main_gradcam.py run with the project's defaults.
- `bench/`: `make bench`, a driver and one worker process per model.
- `eval/`: `make eval`, faithfulness of each CAM method per layer set on the demo detector.
- `demo/`: `make demo`, the demo detector trained on synthetic shapes, and those shapes.
"""
