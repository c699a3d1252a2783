"""What a non-editable install ships: every package folder is a regular package (find_packages
skips folders without __init__.py, which an editable install hides), and conf/ is mapped as
robustlab.conf with every yaml."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_has_an_init():
    folders = [p for p in (ROOT / "robustlab").rglob("*") if p.is_dir() and p.name != "__pycache__"]
    assert [str(p) for p in folders if not (p / "__init__.py").is_file()] == []


def test_the_config_tree_is_a_package_found_by_its_module_name():
    import robustlab.conf

    from robustlab.paths import CONF_DIR

    assert Path(robustlab.conf.__file__).parent == CONF_DIR == ROOT / "conf"
    assert (CONF_DIR / "config.yaml").is_file()
