"""python-backend ``TritonPythonModel`` classes; each committed ``model.py`` re-exports one of them."""
