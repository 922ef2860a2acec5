"""`make bench` (`python -m scripts bench`): the `driver` runs one worker process per model
(`yolo_worker`, `detectron2_worker`, each `python -m scripts.bench.<worker>`) with the flags of `common`."""
