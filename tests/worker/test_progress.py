import io

from rich.console import Console

from worker.progress import progress


def test_bar_is_drawn_on_a_terminal_and_counts():
    out = io.StringIO()
    with progress("results", total=3, console=Console(file=out, force_terminal=True, width=100)) as advance:
        for _ in range(3):
            advance(1)
    assert "results" in out.getvalue()
    assert "3/3" in out.getvalue()


def test_nothing_is_drawn_when_output_is_not_a_terminal():
    out = io.StringIO()
    with progress("results", total=3, console=Console(file=out, force_terminal=False)) as advance:
        advance(1)
    assert out.getvalue() == ""
