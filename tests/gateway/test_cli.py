"""``drgym serve`` on the command line: its help says everything, an unsafe bind is refused."""

from __future__ import annotations

import pytest

from drgym.cli import main


def test_help_names_every_option_and_the_safety_rules(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--search", "--port", "--host", "--token", "--rps", "--budget", "--cache-path", "--cache-mode",
                   "--corpus", "--reader", "--search-kwargs", "--budget-per-episode", "--max-in-flight", "--max-queue"):
        assert option in text
    for fact in ("127.0.0.1", "DRGYM_GATEWAY_TOKEN", "401", "SSRF", "413", "/health", "/metrics", "SIGTERM",
                 "kill -9", 'search="gateway:http://HOST:PORT"', "503", "Retry-After", "timeout_s"):
        assert fact in " ".join(text.split()), fact


def test_a_public_bind_without_a_token_is_refused(capsys, monkeypatch) -> None:
    monkeypatch.delenv("DRGYM_GATEWAY_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "binding '0.0.0.0' (not loopback) needs a shared token" in capsys.readouterr().err


def test_bad_search_kwargs_are_a_clear_error(capsys) -> None:
    assert main(["serve", "--search-kwargs", "{not json", "--port", "0"]) == 2
    assert "--search-kwargs is not JSON" in capsys.readouterr().err
