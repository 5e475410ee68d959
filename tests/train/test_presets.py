"""Named presets validate against TrainConfig and reach `rnafm train`."""

from __future__ import annotations

import pytest

from rnafm.errors import InputError
from rnafm.training.config import TrainConfig, apply_overrides
from rnafm.training.presets import PRESETS, preset_overrides


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_valid_config(name: str) -> None:
    config = apply_overrides(TrainConfig(), preset_overrides(name))
    assert config != TrainConfig()


def test_published_preset_is_the_published_recipe() -> None:
    config = apply_overrides(TrainConfig(), preset_overrides("published"))
    assert config.prior.kind.value == "none"
    assert config.optim.lr == pytest.approx(1e-4)
    assert config.optim.patience == 3
    assert config.validation.draws == 1 and config.antithetic is False
    assert config.sampler.steps == 20 and config.sampler.guidance == pytest.approx(2.0)


def test_none_and_unknown_presets() -> None:
    assert preset_overrides("none") == {}
    with pytest.raises(InputError, match="preset"):
        preset_overrides("no-such-preset")


def test_cli_options_win_over_the_preset(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """`--preset published --set optim.lr=0.01`: the preset applies, the explicit option wins."""
    from click.testing import CliRunner

    import rnafm.training.api as api
    from rnafm.cli.main import cli

    seen: dict = {}

    def fake_train(reference, features, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.update(kw)
        raise SystemExit(0)

    monkeypatch.setattr(api, "train", fake_train)
    ref = tmp_path / "r.csv"
    ref.write_text("wsi_file_name,patient_id,rna_A\n")
    result = CliRunner().invoke(
        cli,
        ["train", "-r", str(ref), "-f", str(tmp_path), "-o", str(tmp_path / "run"),
         "--preset", "published", "--set", "optim.lr=0.01"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen["optim.lr"] == 0.01
    assert seen["prior.kind"] == "none" or getattr(seen["prior.kind"], "value", None) == "none"
    assert seen["optim.patience"] == 3
