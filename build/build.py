#!/usr/bin/env python3
"""Thin entry point of `make build`: see ner_triton.pipeline.build."""

import sys

from ner_triton.pipeline.build import main

if __name__ == "__main__":
    sys.exit(main())
