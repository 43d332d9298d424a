"""The host side of a server: the local tritonserver launcher (``server``) and N replicas behind nginx
(``replicas``). What runs inside Triton is :mod:`ner_triton.runtime`."""
