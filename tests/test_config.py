"""Configs: one declaration per field, the run-configuration file, and --reference."""

from __future__ import annotations

import dataclasses

import pytest

from seas.cli import build_parser, main
from seas.cli.options import data_config, resolve_config
from seas.cli.train import mask_config, train_config
from seas.config import REFERENCE, GenerationConfig, MaskConfig, TrainConfig
from seas.errors import ConfigError


def parse(*argv):
    return build_parser().parse_args([str(a) for a in argv])


def train_args(*extra):
    return parse("train", "--data", "d", "--out", "o", *extra)


@pytest.mark.parametrize("cls", [TrainConfig, MaskConfig, GenerationConfig])
def test_to_dict_and_from_dict_are_symmetric_and_strict(cls):
    cfg = cls()
    assert cls.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=f"unknown key {cls.section}.colour; known keys:"):
        cls.from_dict({**cfg.to_dict(), "colour": "red"})


def test_every_field_has_help_and_the_cli_is_built_from_the_fields():
    for cls in (TrainConfig, MaskConfig, GenerationConfig):
        for field in dataclasses.fields(cls):
            assert field.metadata["help"], f"{cls.__name__}.{field.name} has no help text"
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for flag in ("--attention-eps", "--da-blocks", "--attention-softmax", "--weight-da", "--tokens-per-type"):
        assert flag in text
    assert "{spatial,token}" in text  # choices come from the field


def test_reference_sets_exactly_the_listed_fields():
    for cls, args in ((TrainConfig, train_args("--reference")),
                      (MaskConfig, parse("train-mask", "--run", "r", "--reference")),
                      (GenerationConfig, parse("generate", "--run", "r", "--reference"))):
        plain = resolve_config(cls, _without(args))
        reference = resolve_config(cls, args)
        changed = {k for k, v in reference.to_dict().items() if plain.to_dict()[k] != v}
        listed = {k for k, v in REFERENCE[cls.section].items() if plain.to_dict()[k] != v}
        assert changed == listed, cls.__name__
        assert all(reference.to_dict()[k] == v for k, v in REFERENCE[cls.section].items())
    assert REFERENCE["train"]["attention_eps"] == 0.0 and REFERENCE["train"]["optimizer"] == "adamw8bit"
    assert REFERENCE["generate"]["mask_batchnorm"] == "batch" and REFERENCE["mask"]["timesteps"] == "all"
    # and the dataset's geometry and colour, over the description, under the options given
    assert (data_config(train_args("--reference")).fit, data_config(train_args("--reference")).channels) == (
        "crop", "rgb")
    assert data_config(train_args("--reference", "--fit", "pad")).fit == "pad"
    assert data_config(train_args()).fit == "defect-crop"


def _without(args):
    copy = type(args)(**vars(args))
    copy.reference = False
    return copy


def test_precedence_profile_reference_file_options(tmp_path):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("train:\n  attention_eps: 1.0e-6\n  optimizer: adamw\n  da_blocks: [1]\n"
                        "mask:\n  lr: 0.001\ngenerate:\n  steps: 30\n")
    cfg = train_config(train_args("--profile", "low-memory", "--reference", "--config", run_yaml,
                                  "--attention-eps", "0.5"))
    assert cfg.gradient_checkpointing  # the profile
    assert cfg.mixed_precision == "no"  # --reference over the profile
    assert cfg.optimizer == "adamw" and cfg.da_blocks == [1]  # the file over --reference
    assert cfg.attention_eps == 0.5  # an option over the file
    assert mask_config(parse("train-mask", "--run", "r", "--config", run_yaml)).lr == 0.001
    assert resolve_config(GenerationConfig, parse("generate", "--run", "r", "--config", run_yaml)).steps == 30


def test_a_yaml_data_description_wins_over_reference_and_the_config_file(tmp_path):
    """docs/ARCHITECTURE.md's order for the dataset: --reference < --config's data: < the YAML
    description < the options given (earlier versions let --reference and data: override it)."""
    description = tmp_path / "product.yaml"
    description.write_text("layout: mvtec\nroot: .\nfit: pad\n")
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("data:\n  fit: stretch\n  channels: grey\n")
    data = "--data", str(description)
    assert data_config(train_args(*data, "--reference")).fit == "pad"  # not --reference's crop
    both = data_config(train_args(*data, "--reference", "--config", run_yaml))
    assert both.fit == "pad" and both.channels == "grey"  # the file fills what the description leaves
    assert data_config(train_args(*data, "--reference", "--fit", "crop")).fit == "crop"  # an option wins
    folder = data_config(train_args("--data", str(tmp_path), "--reference", "--config", run_yaml))
    assert folder.fit == "stretch"  # no description: the file over --reference


@pytest.mark.parametrize("text, message", [
    ("train:\n  attention_softmax: pixels\n", "train.attention_softmax 'pixels': choose one of spatial, token"),
    ("train:\n  attention_normalize: global\n", "train.attention_normalize 'global': choose one of joint, sample"),
    ("train:\n  attention_eps: -1\n", "train.attention_eps -1.0: must be at least 0.0"),
    ("train:\n  steps: many\n", "train.steps 'many': not a int"),
    ("train:\n  tokens_per_typ: 4\n", "unknown key train.tokens_per_typ; known keys:"),
    ("trian:\n  steps: 1\n", "unknown section trian; sections: train, mask, generate, memory, data"),
    ("train: [1, 2]\n", "section train must be a mapping"),
    ("train:\n  steps: [\n", "cannot be read"),
])
def test_config_file_errors_are_one_line_naming_the_key(tmp_path, capsys, text, message):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(text)
    out = tmp_path / "out"
    assert main(["train", "--data", str(tmp_path), "--base", "tiny", "--config", str(run_yaml), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(run_yaml) in err
    assert not out.exists()


def test_the_command_line_is_built_without_torch():
    """``seas --help`` and every subcommand's ``--help`` load no deep-learning library: the
    parsers read plain configs only (docs/PERFORMANCE.md gives the time)."""
    import subprocess
    import sys

    code = ("import sys, seas.cli; seas.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'accelerate') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
