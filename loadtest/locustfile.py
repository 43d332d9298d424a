"""Locust suite of the NER service over gRPC (thin: the code is in ner_triton.loadtest).

    locust -f loadtest/locustfile.py --host 127.0.0.1:8001                  # web UI on :8089
    NER_SCENARIO=ramp locust -f loadtest/locustfile.py --headless ...       # steady | ramp | spike

``make loadtest`` runs the steady scenario headless with one worker per core and writes CSV, HTML and
the merged report into loadtest/results/.
"""

import os

from ner_triton.loadtest.user import NerGrpcUser  # noqa: F401  (gevent-ready gRPC; imported first)

if os.environ.get("NER_SCENARIO"):
    from ner_triton.loadtest.shapes import SHAPES

    if os.environ["NER_SCENARIO"] not in SHAPES:
        raise SystemExit(f"NER_SCENARIO={os.environ['NER_SCENARIO']!r} is not one of {sorted(SHAPES)}")
    Shape = SHAPES[os.environ["NER_SCENARIO"]]
