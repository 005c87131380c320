"""What the command line prints on a mistake: one line, naming the problem."""


def one_line_error(err, command, *names):
    """stderr is exactly one line, prefixed with the command, containing every one of ``names``."""
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith(f"nplstm {command}: error: "), err
    assert "Traceback" not in err and "usage:" not in err
    for name in names:
        assert name in lines[0], (name, err)
    return lines[0]
