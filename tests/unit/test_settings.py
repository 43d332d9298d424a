from __future__ import annotations

from pathlib import Path

import pytest

from ner_triton.errors import ConfigError
from ner_triton.settings import BuildSettings


def test_env_overrides_defaults() -> None:
    s = BuildSettings.from_env(
        {"EPOCHS": "2", "MAX_TRAIN_SENTENCES": "100", "DATA": "/d", "CASING": "0", "ARTIFACTS": "out", "MODEL": ""}
    )
    assert s.train.epochs == 2
    assert s.train.max_train_sentences == 100
    assert s.train.use_casing is False
    assert s.data == "/d"
    assert s.artifacts == Path("out")
    assert s.model == ""


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EPOCHS": "two"}, "EPOCHS='two' is not valid"),
        ({"EPOCHS": "0"}, "epochs=0 must be a positive"),
        ({"MAX_TRAIN_SENTENCES": "-5"}, "MAX_TRAIN_SENTENCES=-5"),
        ({"CASING": "maybe"}, "CASING='maybe'"),
        ({"LR": "3"}, "learning_rate=3.0"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BuildSettings.from_env(env)
