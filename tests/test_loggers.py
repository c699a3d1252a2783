"""W&B runs offline unless asked online, keeps its files under the cell's directory, groups runs
by sweep, with a run id stable per cell; a cell's run carries its config, records and flags."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from robustlab.loggers import (
    RECORD_COLUMNS,
    RESOLVED_CONFIG,
    WANDB_FOLDERS,
    check_loggers,
    default_group,
    wandb_logger,
    wandb_mode,
)
from robustlab.results.flags import flag_meaning

FAKE_KEY = "0123456789abcdef0123456789abcdef0fa4e3e1"


@pytest.fixture(autouse=True)
def no_key(monkeypatch, tmp_path):
    """No key, no mode and none of W&B's folders set; HOME an empty folder of the test's own."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", *WANDB_FOLDERS):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_offline_by_default_even_with_a_key(monkeypatch, no_key):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    (no_key / ".netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    assert wandb_mode() == wandb_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode() == "offline"


@pytest.mark.parametrize(
    "mode, env, expected",
    [
        ("online", None, "online"),
        ("offline", "online", "online"),
        ("disabled", None, "disabled"),
        ("offline", "disabled", "disabled"),
        ("online", "disabled", "disabled"),
        ("disabled", "online", "disabled"),
    ],
)
def test_online_or_disabled_only_when_asked(monkeypatch, mode, env, expected):
    if env is not None:
        monkeypatch.setenv("WANDB_MODE", env)
    assert wandb_mode(mode) == expected


@pytest.mark.parametrize("bad", ["Online", "dryrun", "", None])
def test_bad_mode_is_one_line_naming_key_value_and_choices(tmp_path, bad):
    with pytest.raises(ValueError) as err:
        wandb_logger(project="p", save_dir=str(tmp_path / "cell"), name="n", mode=bad)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"logger.wandb.mode={bad!r}")
    assert "offline" in message and "online" in message and "disabled" in message
    with pytest.raises(ValueError, match=r"logger\.wandb\.mode="):
        check_loggers({"csv": {}, "wandb": {"mode": bad}})


def test_the_wandb_config_defaults_to_offline(compose_cfg):
    cfg = compose_cfg("logger=wandb")
    assert cfg.logger.wandb.mode == "offline"
    check_loggers(cfg.logger)
    check_loggers(compose_cfg("logger=wandb", "logger.wandb.mode=online").logger)
    with pytest.raises(ValueError, match=r"logger\.wandb\.mode='onlin'"):
        check_loggers(compose_cfg("logger=wandb", "logger.wandb.mode=onlin").logger)


def test_group_is_the_sweep_and_run_id_is_stable_per_cell(tmp_path):
    cell = tmp_path / "sweep_a" / "0_digits_erm"
    cell.mkdir(parents=True)
    first = wandb_logger(project="p", save_dir=str(cell), name="n")
    again = wandb_logger(project="p", save_dir=str(cell), name="n")
    other = wandb_logger(project="p", save_dir=str(tmp_path / "sweep_a" / "1"), name="n")
    assert first._wandb_init["group"] == "sweep_a"
    assert first._wandb_init["id"] == again._wandb_init["id"] != other._wandb_init["id"]
    assert first._offline and first._wandb_init["mode"] == "offline"


def test_wandb_folders_follow_the_cell_unless_the_user_set_them(monkeypatch, tmp_path):
    mine = str(tmp_path / "my_cache")
    monkeypatch.setenv("WANDB_CACHE_DIR", mine)
    for cell in (tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"):
        wandb_logger(project="p", save_dir=str(cell), name="n")
        for var in set(WANDB_FOLDERS) - {"WANDB_CACHE_DIR"}:
            assert Path(os.environ[var]).is_relative_to(cell.resolve()), var
        assert os.environ["WANDB_CACHE_DIR"] == mine


def test_a_key_set_run_stays_offline_and_writes_nothing_to_home_nor_the_key(
    monkeypatch, tmp_path, no_key
):
    """The whole W&B run, not only the flag: with a key in the environment and in ~/.netrc and
    WANDB_MODE unset, the run is offline, every file it writes lies under the cell's directory,
    and the key is in none of them."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    netrc = no_key / ".netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    cell = tmp_path / "sweep" / "0_digits_erm"
    logger = wandb_logger(project="p", save_dir=str(cell), name="n")
    try:
        logger.log_hyperparams({"lr": 0.1})
        logger.log_metrics({"acc": 0.5}, step=0)
        run = logger.experiment
        assert run.offline and run.settings.mode in ("offline", "dryrun")
        run.finish()
    finally:
        wandb.teardown()  # the W&B service process, started with this test's folders
    assert sorted(p.relative_to(no_key).as_posix() for p in no_key.rglob("*")) == [".netrc"]
    written = [p for p in cell.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in written)  # the offline run, ready for `wandb sync`
    assert [p for p in written if FAKE_KEY.encode() in p.read_bytes()] == []


def test_seed_folders_count_as_their_cell_for_the_group(tmp_path):
    assert default_group(tmp_path / "sweep" / "3_digits_erm") == "sweep"
    assert default_group(tmp_path / "sweep" / "3_digits_erm" / "seed_1") == "sweep"
    assert default_group(tmp_path / "sweep" / "seed_x") == "sweep"


def test_a_cell_run_carries_its_config_records_and_flags_and_ends_with_the_cell(
    monkeypatch, tmp_path, no_key
):
    """The run's config is the cell's resolved_config.yaml; log_records logs every record with
    its flags, the flags' meanings and counts; the next cell's logger (a sequential sweep, a
    reused worker) finishes the run instead of logging into it."""
    wandb = pytest.importorskip("wandb")
    from records_fixture import make_record
    from test_wandb_summary import read_run

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    cell = tmp_path / "sweep" / "0_digits_erm"
    cell.mkdir(parents=True)
    (cell / RESOLVED_CONFIG).write_text("defense:\n  name: erm\nseed: 3\n")
    records = [
        make_record(attack="pgd", robust_acc=0.1),
        make_record(attack="fgsm", robust_acc=0.4, sanity_flags=["not_decreasing_in_eps"]),
    ]
    logger = wandb_logger(project="p", save_dir=str(cell), name="n")
    try:
        logger.log_records(records)
        first = logger.experiment.id
        wandb_logger(project="p", save_dir=str(tmp_path / "sweep" / "1_digits_erm"), name="n")
        assert wandb.run is None  # the first cell's run is finished, none is open
    finally:
        wandb.teardown()
    (run_dir,) = (cell / "wandb").glob(f"offline-run-*-{first}")
    run = read_run(run_dir)
    assert (
        run["exit"] and run["config"]["defense"] == {"name": "erm"} and run["config"]["seed"] == 3
    )
    table = json.loads((run_dir / "files" / run["summary"]["records"]["path"]).read_text())
    assert table["columns"] == RECORD_COLUMNS
    assert [row[table["columns"].index("sanity_flags")] for row in table["data"]] == [
        "",
        "not_decreasing_in_eps",
    ]
    assert run["summary"]["flags_raised"] == ["not_decreasing_in_eps"]
    assert run["summary"]["flagged_records"] == 1
    flags = json.loads((run_dir / "files" / run["summary"]["sanity_flags"]["path"]).read_text())
    assert flags["data"] == [["not_decreasing_in_eps", 1, flag_meaning("not_decreasing_in_eps")]]
    assert [
        p for p in tmp_path.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()
    ] == []


def test_online_runs_keep_the_users_wandb_settings_folder(tmp_path, monkeypatch):
    """A self-hosted server's address lives in W&B's settings folder: online, it is not moved."""
    from robustlab.loggers import keep_wandb_files_under

    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    keep_wandb_files_under(tmp_path / "online", online=True)
    assert "WANDB_CONFIG_DIR" not in os.environ
    assert os.environ["WANDB_CACHE_DIR"].startswith(str(tmp_path))
    keep_wandb_files_under(tmp_path / "offline")
    assert os.environ["WANDB_CONFIG_DIR"].startswith(str(tmp_path / "offline"))
