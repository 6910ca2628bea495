"""What a non-editable install ships: every package folder of minigptv2 and the embedded model's files."""
import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_and_the_nano_assets_are_shipped():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = set(find_packages(str(ROOT), include=cfg["packages"]["find"]["include"]))
    folders = {str(p.parent.relative_to(ROOT)).replace("/", ".") for p in (ROOT / "minigptv2").rglob("__init__.py")}
    assert folders and shipped == folders
    assets = [ROOT / "minigptv2" / g.split("/")[0] for g in cfg["package-data"]["minigptv2"]]     # "assets/**/*"
    assert all(a.is_dir() for a in assets) and (ROOT / "minigptv2/assets/nano/model.safetensors").is_file()
