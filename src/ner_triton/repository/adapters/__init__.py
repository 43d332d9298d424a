"""python-backend ``model.py`` adapters, copied into the model repository by the writer."""
