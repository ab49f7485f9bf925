from pathlib import Path

import pytest
from pydantic import ValidationError

from monitor.config import Settings, load_settings
from monitor.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_serve_the_default_model_on_loopback(clean_env):
    settings = load_settings()
    assert settings == Settings()
    assert settings.model.name == "SmolLM2-135M-Instruct"
    assert settings.model.path is None
    assert settings.vllm.host == "127.0.0.1"
    assert settings.home == Path("~/.cache/saemon").expanduser()


def test_yaml_then_environment_then_overrides_in_that_precedence(clean_env, tmp_path):
    config = write(
        tmp_path / "saemon.yaml",
        "home: /srv/saemon\nvllm:\n  port: 8001\n  max_model_len: 512\n  dtype: bfloat16\n",
    )
    clean_env.setenv("SAEMON_VLLM__PORT", "8002")
    clean_env.setenv("SAEMON_VLLM__DTYPE", "float16")
    settings = load_settings(config, {"vllm.dtype": "auto"})
    assert settings.home == Path("/srv/saemon")
    assert settings.vllm.max_model_len == 512  # from YAML
    assert settings.vllm.port == 8002  # environment beats YAML
    assert settings.vllm.dtype == "auto"  # override beats environment


def test_saemon_config_variable_names_the_yaml_file(clean_env, tmp_path):
    config = write(tmp_path / "c.yaml", "model:\n  name: my-model\n")
    clean_env.setenv("SAEMON_CONFIG", str(config))
    assert load_settings().model.name == "my-model"


def test_environment_lists_are_json(clean_env):
    clean_env.setenv("SAEMON_VLLM__EXTRA_ARGS", '["--max-num-seqs", "8"]')
    assert load_settings().vllm.extra_args == ["--max-num-seqs", "8"]


def test_unknown_yaml_key_is_rejected_with_the_file_and_the_known_keys(clean_env, tmp_path):
    config = write(tmp_path / "c.yaml", "vllm:\n  max_model_length: 512\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    message = str(err.value)
    assert "vllm.max_model_length" in message
    assert str(config) in message
    assert "unknown setting" in message
    assert "max_model_len" in message  # the fix: the name that exists


def test_unknown_environment_variable_is_rejected_by_name(clean_env):
    clean_env.setenv("SAEMON_VLLM__PROT", "8000")
    with pytest.raises(ConfigError, match="SAEMON_VLLM__PROT"):
        load_settings()


def test_invalid_value_names_field_source_and_value(clean_env):
    clean_env.setenv("SAEMON_VLLM__PORT", "eighty")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "vllm.port" in message and "SAEMON_VLLM__PORT" in message and "'eighty'" in message


def test_out_of_range_and_bad_choice_are_rejected(clean_env):
    with pytest.raises(ConfigError, match=r"vllm.port"):
        load_settings(overrides={"vllm.port": 70000})
    with pytest.raises(ConfigError, match=r"vllm.dtype"):
        load_settings(overrides={"vllm.dtype": "int4"})


def test_missing_or_malformed_config_file_is_a_clear_error(clean_env, tmp_path):
    with pytest.raises(ConfigError, match="cannot read it"):
        load_settings(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path / "bad.yaml", "vllm: [unclosed\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_settings(write(tmp_path / "list.yaml", "- 1\n- 2\n"))


def test_empty_config_file_means_defaults(clean_env, tmp_path):
    assert load_settings(write(tmp_path / "empty.yaml", "")) == Settings()


def test_settings_are_frozen(clean_env):
    settings = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.vllm.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"redis.url": "redis://r:6379/0", "redis.sentinels": ["s1:26379"]}, "not both"),
        ({"redis.sentinels": ["s1"]}, "expected host:port"),
        ({"sidecar.model_names": ["a\nb"]}, "printable"),
        ({"sidecar.model_names": ["m" * 300]}, "1 to 256"),
        ({"sidecar.max_model_names": 100_000}, "sidecar.max_model_names"),  # a cap that holds against config
    ],
)
def test_redis_and_model_name_settings_are_checked_naming_the_field(clean_env, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_settings(None, overrides)
    assert message in str(err.value)
