"""The config loader: defaults, drop-ins, and errors that name the file, key and reason."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from ishowttsd import config
from ishowttsd.config import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SHIPPED = Path(__file__).resolve().parents[2] / "etc" / "ishowtts" / "ishowttsd.toml"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_shipped_config_is_valid_and_documents_every_key_with_its_default() -> None:
    cfg = config.load(SHIPPED)
    defaults = config.Config()
    data = tomllib.loads(SHIPPED.read_text())
    for section, cls in config.SECTIONS.items():
        documented = set(data.get(section, {}))
        fields = {f.name for f in dataclasses.fields(cls)}
        assert documented == fields, f"[{section}] keys differ: {documented ^ fields}"
        assert getattr(cfg, section) == getattr(defaults, section), section
    assert cfg.voices == defaults.voices


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[bogus]\nx = 1\n", ["unknown section [bogus]"]),
        ("[model]\narchitecture = 'F5TTS_v1_Base'\nweights = 'x'\nfoo = 1\n", ["[model] foo", "unknown key"]),
        ("[limits]\nqueue_size = 'ten'\n", ["[limits] queue_size", "must be an integer"]),
        ("[limits]\nqueue_size = 0\n", ["[limits] queue_size", "below the minimum"]),
        ("[synthesis]\nnfe = 65\n", ["[synthesis] nfe", "above the maximum 64"]),
        ("[model]\nprecision = 'fp8'\n", ["[model] precision", "not one of"]),
        ("[model]\nattention = 'fast'\n", ["[model] attention", "not one of"]),
        ("[http]\nlisten = 'nowhere'\n", ["[http] listen", "HOST:PORT"]),
        ("[model]\ndevice = 'tpu'\n", ["[model] device"]),
        ("[clocks]\nrequired = 'yes'\n", ["[clocks] required", "true or false"]),
        ("[[voices]]\nid = 'a'\nreference_audio = '/x.wav'\n", ["reference_text", "required"]),
        ("[[voices]]\nreference_text = 'x'\n", ["[[voices]] #1 id", "missing"]),
        ("[synthesis]\ndefault_voice = 'ghost'\n", ["[synthesis] default_voice", "ghost"]),
        ("[limits\n", ["not valid TOML"]),
    ],
)
def test_errors_name_file_key_and_reason(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as info:
        config.load(path, dev=True, cwd=tmp_path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, message


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "absent.toml")


def test_dropins_apply_in_sorted_order_and_errors_name_the_dropin(tmp_path: Path) -> None:
    main = write(tmp_path / "ishowttsd.toml", "[synthesis]\nnfe = 7\n[limits]\nqueue_size = 3\n")
    (tmp_path / "conf.d").mkdir()
    write(tmp_path / "conf.d" / "20-late.toml", "[synthesis]\nnfe = 9\n")
    write(tmp_path / "conf.d" / "10-early.toml", "[synthesis]\nnfe = 6\nspeed = 1.5\n")
    cfg = config.load(main)
    assert cfg.synthesis.nfe == 9 and cfg.synthesis.speed == 1.5 and cfg.limits.queue_size == 3
    assert cfg.sources == (str(main), str(tmp_path / "conf.d" / "10-early.toml"),
                           str(tmp_path / "conf.d" / "20-late.toml"))
    bad = write(tmp_path / "conf.d" / "30-bad.toml", "[synthesis]\nspeed = 9.0\n")
    with pytest.raises(ConfigError, match=str(bad)):
        config.load(main)


def test_dev_defaults_and_config_over_them(tmp_path: Path) -> None:
    cfg = config.load(None, dev=True, cwd=tmp_path)
    assert (cfg.model.architecture, cfg.model.weights, cfg.model.device) == ("tiny", "untrained", "cpu")
    assert cfg.admin.socket == str(tmp_path / ".dev" / "run" / "admin.sock")
    assert cfg.daemon.state_dir == str(tmp_path / ".dev" / "state")
    assert cfg.http.listen == "127.0.0.1:8080"
    over = write(tmp_path / "t.toml", "[limits]\nqueue_size = 4\n")
    cfg = config.load(over, dev=True, port=9999, cwd=tmp_path)
    assert cfg.limits.queue_size == 4 and cfg.model.architecture == "tiny" and cfg.http.listen == "127.0.0.1:9999"


def test_model_files_missing_names_weights_and_vocoder(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", f"[daemon]\nstate_dir = '{tmp_path}'\n[model]\nweights = '{tmp_path}/w.pt'\n")
    cfg = config.load(path)
    assert config.model_files_missing(cfg) == [f"{tmp_path}/w.pt", f"{tmp_path}/models/vocos-mel-24khz"]
    assert config.model_files_missing(config.load(None, dev=True, cwd=tmp_path)) == []
