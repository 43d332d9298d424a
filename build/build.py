#!/usr/bin/env python3
"""`python build/build.py` = the installed `ner-build` (what `make build` runs): see ner_triton.pipeline.build."""

import sys

from ner_triton.pipeline.build import main

if __name__ == "__main__":
    sys.exit(main())
