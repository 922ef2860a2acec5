"""`make cam` (`python -m scripts cam`): an upstream's main_gradcam.py run with the project's defaults
(`launch`)."""
