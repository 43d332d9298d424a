#!/usr/bin/env python
"""Thin wrapper of the installed `ner-client` command (see ner_triton.client_cli)."""

import sys

from ner_triton.client_cli import main

if __name__ == "__main__":
    sys.exit(main())
