"""Settings: defaults, parsing from the environment, validation naming the variable, no secrets shown."""
from __future__ import annotations

from pathlib import Path

import pytest

from backend.service.settings import Settings, SettingsError, redact_url


def test_defaults_match_the_design():
    s = Settings()
    assert s.acquisition_model == "distilbert-base-uncased"
    assert s.strategy == "auto"
    assert (s.ups_gamma, s.ups_temperature) == (0.1, 0.01)
    assert s.full_rescore_iterations == (1, 2, 5, 9)
    assert not s.auth_enabled and not s.label_studio_configured


def test_from_env_parses_every_type():
    s = Settings.from_env({
        "LABEL_STUDIO_URL": "http://ls:8080/", "LABEL_STUDIO_API_KEY": "tok", "WORKERS": "3",
        "UPS_GAMMA": "0.2", "FULL_RESCORE_ITERATIONS": "1, 3 7", "MODEL_DIR": "/tmp/m", "EPOCHS": "2",
        "LEARNING_RATE": "", "LABEL_CONTROL_NAME": "sentiment", "TRAIN_EVERY_N": "0",
    })
    assert s.label_studio_url == "http://ls:8080"
    assert s.workers == 3 and s.ups_gamma == 0.2 and s.full_rescore_iterations == (1, 3, 7)
    assert s.model_dir == Path("/tmp/m") and s.epochs == 2 and s.learning_rate is None
    assert s.label_control_name == "sentiment" and s.train_every_n == 0
    assert s.label_studio_configured
    tc = s.training_config()
    assert tc.epochs == 2 and tc.device == "auto"


def test_env_is_only_read_by_from_env(monkeypatch):
    monkeypatch.setenv("WORKERS", "5")
    assert Settings().workers == 1
    assert Settings.from_env().workers == 5


@pytest.mark.parametrize(
    "env, name",
    [
        ({"WORKERS": "two"}, "WORKERS"),
        ({"WORKERS": "0"}, "WORKERS"),
        ({"UPS_GAMMA": "1.5"}, "UPS_GAMMA"),
        ({"UPS_TEMPERATURE": "0"}, "UPS_TEMPERATURE"),
        ({"FULL_RESCORE_ITERATIONS": "1,x"}, "FULL_RESCORE_ITERATIONS"),
        ({"FULL_RESCORE_ITERATIONS": "0"}, "FULL_RESCORE_ITERATIONS"),
        ({"STRATEGY": "bald"}, "STRATEGY"),
        ({"LABEL_STUDIO_URL": "ftp://x"}, "LABEL_STUDIO_URL"),
        ({"BASIC_AUTH_PASS": "p"}, "BASIC_AUTH_USER"),
        ({"KEY_PREFIX": "a b"}, "KEY_PREFIX"),
        ({"MAX_LENGTH": "4"}, "max_length"),
    ],
)
def test_bad_values_name_the_variable(env, name):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


def test_secrets_never_shown():
    s = Settings.from_env({
        "LABEL_STUDIO_API_KEY": "super-secret-token", "BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "hunter2",
        "REDIS_URL": "redis://:redis-pass@localhost:6380/1",
    })
    shown = repr(s) + str(s.describe())
    for secret in ("super-secret-token", "hunter2", "redis-pass"):
        assert secret not in shown
    assert "***" in shown and "localhost:6380" in shown
    assert s.basic_auth_pass == "hunter2"  # the value itself is intact


def test_bad_secret_value_not_echoed():
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"BASIC_AUTH_PASS": "hunter2"})
    assert "hunter2" not in str(err.value)


def test_redact_url():
    assert redact_url("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


def test_help_text_lists_every_variable():
    text = Settings.help_text()
    for name in ("LABEL_STUDIO_URL", "REDIS_URL", "ACQUISITION_MODEL", "UPS_GAMMA", "SCORE_CHUNK_SIZE",
                 "MAX_REQUEST_BYTES", "LABEL_CONTROL_NAME", "DEVICE"):
        assert name in text
