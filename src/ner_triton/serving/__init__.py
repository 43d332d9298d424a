"""Serving: the logic of each Triton step (``steps``) and the local server launcher (``server``)."""
