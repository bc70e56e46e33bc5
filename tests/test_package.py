"""The package's import surface: public names load on first use, and the CLI starts light."""

import subprocess
import sys

import pytest

import streamsynth
from streamsynth.cli import main as cli


def test_every_public_name_resolves_to_its_module_object():
    from streamsynth.api import generate
    from streamsynth.records import Sample

    assert streamsynth.generate is generate and streamsynth.Sample is Sample
    assert set(streamsynth.__all__) <= set(dir(streamsynth))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        streamsynth.nope  # noqa: B018


def test_the_cli_module_imports_no_heavy_dependency():
    """So a Ctrl-C in the command's first moments reaches its handler instead of a traceback mid-import."""
    heavy = ["torch", "transformers", "pyarrow", "pydantic", "numpy", "streamsynth.api", "streamsynth.records"]
    code = ("import sys, streamsynth.cli.main; "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_ctrl_c_outside_a_command_handler_is_one_line_and_exit_130(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
