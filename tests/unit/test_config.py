"""The configuration file: validated at start-up, errors name the file, field and reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from gateway.levels import Level

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "celgate.yaml"
    path.write_text(text)
    return path


def test_bundled_config_loads() -> None:
    config = load_config(ROOT / "config" / "celgate.yaml")
    assert config.server.listen == "127.0.0.1:50051"
    assert config.server.is_loopback
    local = config.models[config.default_model]
    assert (local.provider, local.base_url, local.location) == (
        "ollama",
        "http://127.0.0.1:11434",
        "on_prem",
    )
    assert local.clearance is Level.RESTRICTED


def test_invalid_fields_are_all_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "default_model: nope\nmodels:\n  m:\n    provider: azure\n    base_url: ftp://x\n"
        "    location: moon\n    clearance: SECRET\n    upstream_model: x\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert str(path) in text
    for fragment in (
        "models.m.provider",
        "models.m.base_url",
        "models.m.location",
        "models.m.clearance",
    ):
        assert fragment in text
    assert "unknown classification 'SECRET'" in text


def test_unknown_default_model(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "default_model: nope\nmodels:\n  m: {provider: ollama, upstream_model: x, "
        "base_url: 'http://127.0.0.1:1', location: on_prem, clearance: PUBLIC}\n",
    )
    with pytest.raises(ConfigError, match="default_model 'nope' is not in models"):
        load_config(path)


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  m: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+:\d+"):
        load_config(path)


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "defualt_model: x\n")
    with pytest.raises(ConfigError, match="defualt_model: Extra inputs are not permitted"):
        load_config(path)


def test_serve_with_invalid_config_exits_2_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {listen: nowhere}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert str(path) in proc.stderr
    assert "server.listen" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_bad_provider_params_exit_2_naming_the_model(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "default_model: m\npolicy: {watch: false}\nmodels:\n  m: {provider: openai, "
        "upstream_model: x, base_url: 'http://127.0.0.1:9/v1', location: on_prem, "
        "clearance: PUBLIC, params: {max_tokens_param: tokens_max}}\n",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert "models.m.params" in proc.stderr
    assert "Traceback" not in proc.stderr
