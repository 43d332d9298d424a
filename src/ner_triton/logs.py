"""One logging set-up for every command-line entry point."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET = ("transformers", "onnxruntime", "urllib3", "filelock", "httpx")


class _DropLibraryRootWarnings(logging.Filter):
    """ONNX Runtime's quantizer warns through the *root* logger ("consider pre-processing");
    drop those below ERROR without silencing the root logger itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "root" and record.levelno < logging.ERROR:
            return "site-packages" not in record.pathname
        return True


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format=FORMAT)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropLibraryRootWarnings())
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.ERROR)
