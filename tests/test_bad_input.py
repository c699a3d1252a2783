"""Every bad input of a newcomer fails through the real entry point (``robustlab.run.main``) with
exit status 2 and one line on stderr naming the key, before any data is read or training starts."""

from __future__ import annotations

import sys

import pytest
from data_fixtures import write_cifar, write_mnist

from robustlab.run import main


def robustlab(monkeypatch, capsys, tmp_path, *args: str) -> str:
    """Run ``robustlab ARGS`` in this process; return stderr (asserting one line, exit 2)."""
    argv = ["robustlab", f"hydra.run.dir={tmp_path / 'run'}", f"cache.dir={tmp_path / 'cache'}"]
    monkeypatch.setattr(sys, "argv", [*argv, *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("robustlab: error: "), err
    assert not (tmp_path / "run" / "records.jsonl").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "cache").exists()
    return lines[0]


CASES = [
    (["dataset.batch_size=0"], "dataset.batch_size=0"),
    (["dataset.eval_batch_size=-1"], "dataset.eval_batch_size=-1"),
    (["dataset.val_size=5000"], "dataset.val_size=5000"),
    (["dataset.train_limit=0"], "dataset.train_limit=0"),
    (["defense.optimizer.lr=-0.1"], "defense.optimizer.lr=-0.1"),
    (["defense.optimizer.name=rmsprop"], "defense.optimizer.name='rmsprop' is not one of"),
    (["defense.scheduler.name=cosin"], "defense.scheduler.name='cosin' is not one of"),
    (["torch_threads=-2"], "torch_threads=-2"),
    (["torch_threads=0"], "torch_threads=0"),
    (["seed=1.5"], "seed=1.5"),
    (["trainer.max_epochs=1.5"], "trainer.max_epochs=1.5"),
    (["eval.every_n_val_epochs=-1"], "eval.every_n_val_epochs=-1"),
    (["ckpt=model.pt"], "ckpt=model.pt is only read with mode=eval"),
    (["+attack.pgd.stepz=5"], "attack.pgd: ['stepz'] not parameters of attack kind pgd"),
    (["attack.pgd.steps=0"], "attack.pgd.steps=0 must be a positive integer"),
    (["attack.fgsm.restarts=0"], "attack.fgsm.restarts=0 must be a positive integer"),
    (
        ["attack=[apgd_ce]", "attack.apgd_ce.restarts=0"],
        "attack.apgd_ce.restarts=0 must be a positive integer",
    ),
    (
        ["attack=[autoattack]", "attack.autoattack.restarts=0"],
        "attack.autoattack.restarts=0 must be a positive integer",
    ),
    (
        ["attack=[autoattack]", "attack.autoattack.steps=0"],
        "attack.autoattack.steps=0 must be a positive integer",
    ),
    (
        ["attack=[autoattack]", "attack.autoattack.points_per_call=0"],
        "attack.autoattack.points_per_call=0 must be a positive integer",
    ),
    (
        ["attack=[autoattack]", "attack.autoattack.batch_size=two"],
        "attack.autoattack.batch_size='two' must be a positive integer",
    ),
    (["eval.score_draws=0"], "eval.score_draws=0"),
    (["seeds=[0,0]"], "seeds=[0, 0] repeats a seed"),
    (["defense=pgd_at", "eval.compare_with=[pgd_at]"], "names the cell's own defense pgd_at"),
    (["seeds=3"], "seeds=3 must be a list, e.g. seeds=[0,1,2]"),
    (["seeds=[-1]"], "seeds[]=-1"),
    (["eval.transfer_floor=maybe"], "eval.transfer_floor='maybe' must be true or false"),
    (["eval.threat_models=nope"], "eval.threat_models='nope'"),
    (["eval.batch_size=0"], "eval.batch_size=0"),
    (["eval.natural_shifts=[9]"], "eval.natural_shifts=[9] holds 9"),
    (["eval.val_subset=0"], "eval.val_subset=0"),
    (["eval.grad_check_points=0"], "eval.grad_check_points=0"),
    (["eval.grad_check_points=all"], "eval.grad_check_points='all'"),
    (["attack=[]"], "attack=[] selects no attack"),
    (["inference=[]"], "inference=[] selects no wrapper"),
    (["threat.eps=[]"], "threat.eps=[] is empty"),
    (["threat.eps=abc"], "threat.eps='abc' is not a number"),
    (["eval.compare_with=erm"], "eval.compare_with='erm' must be a list"),
    (["eval.compare_with=[nope]"], "eval.compare_with[0]='nope'"),
    (["inference=[translation]", "defense=erm"], "inference=translation needs the trained"),
    (["mode=eval"], "mode=eval needs ckpt=PATH"),
    (["mode=eval", "ckpt=missing.pt"], "ckpt=missing.pt does not exist"),
    (["dataset.eps=2"], "dataset.eps=2.0 is outside (0, 1]"),
    (["logger=wandb", "logger.wandb.mode=onlin"], "logger.wandb.mode='onlin' is not one of"),
    (["+attack.nope.steps=3"], "attack.nope has no _target_"),
    # old spellings name the new one
    (["attacks=[fgsm]"], "attacks is gone; use attack=[fgsm,pgd]"),
    (["eval.inferences=[mi_ol]"], "eval.inferences is gone; use inference=[plain,mi_ol]"),
    (["attack.eps=0.1"], "attack.eps is gone; use threat.eps=V"),
    (["attack.steps=5"], "attack.steps no longer sets every attack"),
    (["+attack.pgd.steps=5"], "use attack.pgd.steps=5"),
    (["inference.pool=test"], "use inference.NAME.pool=V"),
]


@pytest.mark.parametrize("args, needle", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_before_any_work(monkeypatch, capsys, tmp_path, args, needle):
    monkeypatch.chdir(tmp_path)
    assert needle in robustlab(monkeypatch, capsys, tmp_path, *args)


def test_truncated_idx_file_is_named(monkeypatch, capsys, tmp_path):
    root = write_mnist(tmp_path / "mnist")
    images = root / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[: len(images.read_bytes()) // 2])
    line = robustlab(monkeypatch, capsys, tmp_path, "dataset=mnist", f"dataset.root={root}")
    assert "train-images-idx3-ubyte.gz" in line


def test_idx_file_that_is_not_gzip_is_named(monkeypatch, capsys, tmp_path):
    root = write_mnist(tmp_path / "mnist")
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"plain text, not gzip")
    line = robustlab(monkeypatch, capsys, tmp_path, "dataset=mnist", f"dataset.root={root}")
    assert "t10k-labels-idx1-ubyte.gz" in line


def test_cifar_batch_that_is_not_a_pickle_is_named(monkeypatch, capsys, tmp_path):
    root = write_cifar(tmp_path / "cifar")
    batch = next(root.rglob("data_batch_1"))
    batch.write_bytes(b"not a pickle")
    line = robustlab(
        monkeypatch, capsys, tmp_path, "dataset=cifar10", f"dataset.root={root}", "model=smallcnn"
    )
    assert "data_batch_1" in line


def test_download_without_network_is_one_line(monkeypatch, capsys, tmp_path):
    from robustlab.data.idx import MNISTDataModule

    monkeypatch.setattr(MNISTDataModule, "mirrors", ("http://127.0.0.1:9/",))
    line = robustlab(
        monkeypatch,
        capsys,
        tmp_path,
        "dataset=mnist",
        f"dataset.root={tmp_path / 'empty'}",
        "dataset.download=true",
    )
    assert "train-images-idx3-ubyte.gz" in line
