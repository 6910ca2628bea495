"""Fixtures of the minigptv2/eval tests: a tiny random model, and the same saved as a model folder."""
import pytest

from helpers import tiny_model
from minigptv2.checkpoint import save


@pytest.fixture(scope="session")
def mp(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("ev"), seed=2)


@pytest.fixture(scope="session")
def model_dir(mp, tmp_path_factory):
    model, proc = mp
    return save(model, proc.tok.path, tmp_path_factory.mktemp("evm") / "tiny")
