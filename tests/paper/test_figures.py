"""`edgevae figures --quick` with tiny models: every figure is written, runs are reused."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from edgevae.cli import main
from edgevae.paper import figures
from edgevae.runtime import images

TINY = ["--quick", "--latents", "2,3", "--hidden", "16"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures")
    out, work = root / "out", root / "runs"
    rc = main(["figures", "--out", str(out), "--work", str(work), *TINY])
    assert rc == 0
    return out, work


def test_every_figure_is_a_nonempty_png(made):
    out, _ = made
    report = json.loads((out / "figures.json").read_text())
    files = [f["file"] for f in report["figures"]]
    assert files == [
        "manifold_mnist.png",
        "samples_mnist_L2.png",
        "samples_mnist_L3.png",
        "bound_vs_samples.png",
        "training_curves.png",
    ]
    for name in files:
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 1000, name
    side = figures.MANIFOLD_STEPS * (28 + images.PAD) + images.PAD
    assert Image.open(out / "manifold_mnist.png").size == (side, side)
    side = 10 * (28 + images.PAD) + images.PAD
    assert Image.open(out / "samples_mnist_L2.png").size == (side, side)


def test_figures_json_records_command_seed_and_time(made):
    out, work = made
    report = json.loads((out / "figures.json").read_text())
    for key in ("command", "seed", "wall_seconds", "figures", "runs", "epochs", "versions"):
        assert key in report
    assert report["command"].startswith("edgevae figures --out ")
    assert "--quick" in report["command"] and "--latents 2,3" in report["command"]
    assert report["seed"] == 0 and report["wall_seconds"] > 0
    assert report["epochs"] == {"mnist": figures.QUICK_EPOCHS}
    runs = {r["name"]: r for r in report["runs"]}
    assert set(runs) == {"mnist-L2", "mnist-L3"}
    assert runs["mnist-L2"]["hidden"] == [16] and not runs["mnist-L2"]["reused"]
    for f in report["figures"]:
        assert f["what"] and f["runs"]


def test_rerun_reuses_complete_runs_and_retrains_changed_ones(made, tmp_path):
    _, work = made
    out = tmp_path / "again"
    report = figures.make_figures(
        out, work=work, quick=True, latents=(2, 3), hidden=[16], command=["x"]
    )
    assert all(r["reused"] for r in report["runs"])
    assert report["command"] == "x"
    # One more epoch asked for: the run no longer matches and is trained again.
    spec = figures.RunSpec("mnist-L3", "mnist", None, [16], 3, figures.QUICK_EPOCHS + 1, 0)
    assert not figures.run_is_complete(work / "mnist-L3", spec)
    spec.epochs = figures.QUICK_EPOCHS
    assert figures.run_is_complete(work / "mnist-L3", spec)
    (work / "mnist-L3" / "metrics.jsonl").write_text("")  # an interrupted run
    assert not figures.run_is_complete(work / "mnist-L3", spec)


def test_bad_options(tmp_path, capsys):
    assert main(["figures", "--out", str(tmp_path / "o"), "--latents", "5,10"]) == 2
    assert "error: --latents: must include 2" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["figures", "--out", str(tmp_path / "file"), "--quick"]) == 2
    assert "error: --out: " in capsys.readouterr().err
    for flag, value in (("--epochs", "0"), ("--frey-epochs", "0"), ("--threads", "-1")):
        assert main(["figures", "--out", str(tmp_path / "o"), flag, value]) == 2
        assert flag in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"latents": (3, 5)}, "latents"),
        ({"latents": (0, 2)}, "latents"),
        ({"epochs": 0}, "epochs"),
        ({"frey_epochs": 0}, "frey_epochs"),
        ({"threads": -1}, "threads"),
    ],
)
def test_library_errors_name_the_argument(tmp_path, kwargs, param):
    from edgevae.errors import UsageError

    with pytest.raises(UsageError) as info:
        figures.make_figures(tmp_path / "o", work=tmp_path / "w", **kwargs)
    assert info.value.param == param and "--" not in str(info.value)
    assert not (tmp_path / "w").exists()


@pytest.mark.shared
def test_frey_face_adds_its_manifold_and_panel(made, tmp_path):
    from conftest import shared_data

    frey = shared_data("frey_face")
    report = figures.make_figures(
        tmp_path / "out",
        work=made[1],  # the MNIST runs are reused; only Frey Face is trained
        quick=True,
        latents=(2,),
        hidden=[16],
        frey=str(frey),
    )
    files = [f["file"] for f in report["figures"]]
    assert "manifold_frey.png" in files
    w, h = Image.open(tmp_path / "out" / "manifold_frey.png").size
    steps = figures.MANIFOLD_STEPS
    assert (w, h) == (steps * (20 + images.PAD) + images.PAD, steps * (28 + images.PAD) + 2)
    assert {r["dataset"] for r in report["runs"]} == {"mnist", "frey"}
