#!/usr/bin/env python
"""Ten lines of client: entities of two texts from a running server (`make serve`)."""

from ner_triton.client import NerClient

with NerClient("127.0.0.1:8001", timeout_s=10) as client:
    texts = ["Angela Merkel met Emmanuel Macron in Paris.", "Reuters reported from Berlin on Tuesday."]
    for text, entities in zip(texts, client.extract(texts), strict=True):
        print(text)
        for e in entities:
            print(f"  {e.entity:<4} {e.word!r} [{e.start}:{e.end}] {e.score:.2f}")
