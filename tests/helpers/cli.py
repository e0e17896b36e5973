"""Running the command line in tests."""

from __future__ import annotations

from zfnet.cli import main


def one_line_error(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI: it must fail with status 2 and exactly one stderr line, without a traceback, that
    contains every one of ``needles``. Returns that line."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
