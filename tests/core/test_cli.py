"""`quill --help` must stay instant: no layer may import heavy libraries at module level."""

import subprocess
import sys

HEAVY = ("torch", "lightning", "mlflow", "gradio", "onnxruntime", "optuna", "sqlalchemy")


def test_help_lists_commands_without_heavy_imports():
    code = (
        "import sys; from typer.testing import CliRunner; from quill.cli import app; "
        "result = CliRunner().invoke(app, ['--help']); print(result.output); "
        f"print('HEAVY:', [m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "data" in out.stdout
    assert "HEAVY: []" in out.stdout, out.stdout


def test_the_command_table_names_what_each_module_registers():
    from quill.cli import COMMAND_MODULES, COMMANDS, build_app

    for module in COMMAND_MODULES:
        app = build_app([module])
        registered = {c.name or c.callback.__name__ for c in app.registered_commands}
        registered |= {g.name or g.typer_instance.info.name for g in app.registered_groups}
        assert registered == {name for name, owner in COMMANDS.items() if owner == module}


def test_a_command_imports_only_its_own_module():
    """`quill stage --help` loads the staging commands alone, and still runs as `stage` (a
    one-command app must not turn into that command)."""
    code = (
        "import sys; sys.argv = ['quill', 'stage', '--help']; from quill.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    print('EXIT', exit.code)\n"
        "print('CLIS', sorted(m for m in sys.modules if m.startswith('quill.') and "
        "m.endswith('.cli')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "quill stage" in out.stdout and "EXIT 0" in out.stdout
    assert "CLIS ['quill.cli', 'quill.staging.cli']" in out.stdout


def test_unknown_commands_and_bare_help_see_every_command():
    from typer.testing import CliRunner

    from quill.cli import COMMAND_MODULES, build_app, modules_for

    assert modules_for([]) == modules_for(["--help"]) == modules_for(["nosuch"]) == COMMAND_MODULES
    result = CliRunner().invoke(build_app(modules_for(["nosuch"])), ["nosuch"])
    assert result.exit_code == 2 and "No such command" in result.output


def _commands(command, path=()):
    """Every leaf command of a click group, with its path of names."""
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        yield " ".join(path), command
        return
    for name, sub in subcommands.items():
        yield from _commands(sub, (*path, name))


#: Integer options whose range the resolved config checks instead (-1: no limit).
CHECKED_BY_CONFIG = {("train", "--max-epochs"), ("train", "--max-steps")}


def test_every_count_option_has_a_lower_bound():
    """A count, a port, a seed or a limit below its range is a usage error (exit 2) named by
    its option, not a ZeroDivisionError, a negative slice dropping the last items, or a seed
    numpy refuses mid-run."""
    import typer

    from quill.cli import COMMAND_MODULES, build_app

    unbounded = []
    for path, command in _commands(typer.main.get_command(build_app(COMMAND_MODULES))):
        for param in command.params:
            annotation = str(getattr(param.type_descriptor, "annotation", ""))
            if "int" not in annotation or "Literal" in annotation:
                continue
            if param.min is None and (path, param.opts[0]) not in CHECKED_BY_CONFIG:
                unbounded.append(f"quill {path} {param.opts[0]}")
    assert unbounded == []


def test_a_negative_limit_is_refused_before_anything_runs(tmp_path):
    from typer.testing import CliRunner

    from quill.cli import COMMAND_MODULES, build_app

    out = tmp_path / "tasks.json"
    args = ["monitor", "export", "--out", str(out), "--limit", "-5"]
    result = CliRunner().invoke(build_app(COMMAND_MODULES), args)
    assert result.exit_code == 2 and "--limit" in result.output
    assert not out.exists()


def test_no_help_text_loses_words_to_rich_markup():
    """Rich reads "[default: ...]" in a help text as a markup tag and drops it: `quill serve
    --help` printed "('off' disables) ." where the default store should have been."""
    import typer
    from rich.errors import MarkupError
    from rich.text import Text

    from quill.cli import COMMAND_MODULES, build_app

    eaten = []
    for path, command in _commands(typer.main.get_command(build_app(COMMAND_MODULES))):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        for text in texts:
            try:
                shown = Text.from_markup(text).plain
            except MarkupError:
                shown = ""
            if shown != text:
                eaten.append(f"quill {path}: {text!r}")
    assert eaten == []


def test_help_paragraphs_are_wrapped_by_the_terminal_not_by_the_source(monkeypatch):
    """Typer keeps a docstring's line breaks after its first paragraph: at 80 columns `quill
    predict --help` cut 'joined by " / "),' and 'tab-separated' onto lines of their own."""
    import typer
    from typer.testing import CliRunner

    from quill.cli import COMMAND_MODULES, build_app

    app = build_app(COMMAND_MODULES)
    for path, command in _commands(typer.main.get_command(app)):
        for paragraph in (command.help or "").split("\n\n"):
            assert "\n" not in paragraph or paragraph.startswith("\b"), f"quill {path}"
    monkeypatch.setenv("COLUMNS", "400")
    shown = CliRunner().invoke(app, ["predict", "--help"]).output
    assert 'joined by " / "), tab-separated; standard error says' in shown
