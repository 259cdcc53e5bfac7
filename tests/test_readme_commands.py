"""Every `manage.py` example in the READMEs runs as documented, so a documented command cannot break silently.

The examples are read from README.md (and README.ru.md when it exists): fenced code blocks, with
`$M` expanded, continuation lines joined, `$(...)` unwrapped and `a|b|c` verbs expanded into one
example each, plus inline code spans. Each runs against a fresh test installation holding what the
README's examples name ("Lab server", study003.local, helena, bob, partner.org, queued message 12);
an example that creates one of those runs without it. They run in-process through the same steps
as `manage.py` (argument parsing, Django's global options, system checks, `execute`), and one runs
as a real `manage.py` process.
"""

from __future__ import annotations

import getpass
import io
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class
from django.core.management.base import BaseCommand, CommandError, handle_default_options

from servers import mailstore, services, tls
from servers.delivery import engine
from servers.management.commands import smtpsvc
from tests.factories import make_pop3_service, make_server
from tests.helpers import free_port

REPO_DIR = Path(__file__).resolve().parent.parent
READMES = [path for path in (REPO_DIR / "README.md", REPO_DIR / "README.ru.md") if path.exists()]

# Commands that run until stopped: a test cannot wait for them to finish.
LONG_RUNNING = {
    "runstack": "runs the whole stack in the foreground until Ctrl-C",
    "run_smtpd": "an SMTP worker: serves until stopped (started by the supervisor)",
    "run_pop3d": "the POP3 worker: serves until stopped (started by the supervisor)",
    "run_imapd": "the IMAP worker: serves until stopped (started by the supervisor)",
    "runserver": "Django's development server: serves until stopped",
    "celery": "Celery worker and beat: run until stopped",
}
# Examples meant to fail, with the exit status they document.
EXPECTED_EXIT_STATUS: dict[str, int] = {
    # The test installation publishes no DNS records for study003.local.
    "smtpsvc dns-check study003.local": 1,
}

# Django's options on every command; an argument of our own with one of these names is clobbered.
DJANGO_GLOBAL_DESTS = {
    "settings",
    "pythonpath",
    "verbosity",
    "traceback",
    "no_color",
    "force_color",
    "skip_checks",
    "version",
}


@dataclass(frozen=True)
class Example:
    readme: str
    line: int
    argv: tuple[str, ...]  # after `manage.py`

    @property
    def text(self) -> str:
        return shlex.join(self.argv)

    def __str__(self) -> str:
        return f"{self.readme}:{self.line}: manage.py {self.text}"


def _logical_lines(block: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    pending, start = "", 0
    for number, line in block:
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


def _commands_in(line: str, variables: dict[str, str]) -> list[list[str]]:
    """The argv lists after `manage.py` in one shell line (expanded, comments dropped)."""
    assignment = re.match(r"^\s*(\w+)=(\"[^\"]*\"|'[^']*')\s*$", line)
    if assignment:
        variables[assignment.group(1)] = shlex.split(assignment.group(2))[0]
        return []
    for name, value in variables.items():
        line = re.sub(rf"\${name}\b", value, line)
    substitution = re.search(r"\$\((.*)\)", line)
    if substitution:
        line = substitution.group(1)
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    commands = []
    while any(word.endswith("manage.py") for word in words):
        index = next(i for i, word in enumerate(words) if word.endswith("manage.py"))
        rest = words[index + 1 :]
        end = next((i for i, word in enumerate(rest) if word in ("&&", ";", "||")), len(rest))
        if rest[:end]:
            commands.append(rest[:end])
        words = rest[end + 1 :]
    return commands


def _expand_alternatives(argv: list[str]) -> list[list[str]]:
    """`smtpqueue retry|freeze|unfreeze S 12` is three examples."""
    for index, word in enumerate(argv):
        if "|" in word and " " not in word and not word.startswith(("-", "/")):
            return [
                expanded
                for choice in word.split("|")
                for expanded in _expand_alternatives([*argv[:index], choice, *argv[index + 1 :]])
            ]
    return [argv]


def readme_examples(path: Path) -> list[Example]:
    examples: list[Example] = []
    lines = path.read_text().splitlines()
    in_block = False
    block: list[tuple[int, str]] = []
    variables: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if line.lstrip().startswith("```"):
            if in_block:
                for start, logical in _logical_lines(block):
                    for argv in _commands_in(logical, variables):
                        examples += [Example(path.name, start, tuple(a)) for a in _expand_alternatives(argv)]
            in_block, block = not in_block, []
            continue
        if in_block:
            block.append((number, line))
            continue
        for span in re.findall(r"`([^`]*manage\.py[^`]*)`", line):
            for argv in _commands_in(span, {}):
                examples += [Example(path.name, number, tuple(a)) for a in _expand_alternatives(argv)]
    return examples


EXAMPLES = [example for path in READMES for example in readme_examples(path)]
RUNNABLE = [example for example in EXAMPLES if example.argv[0] not in LONG_RUNNING]


# --- the installation the examples talk about --------------------------------------------------------

# An example runs in the world its README section has built: one that creates one of the README's
# objects runs without it, and a server is deleted (as documented) once it has no mailboxes left.
WITHOUT = [
    (r"^smtpsvc create '?Lab server", {"Lab server"}),
    (r"^winpop add study003\.local$", {"study003.local"}),
    (r"^winpop add helena@", {"helena"}),
    (r"^winpop add bob@", {"bob"}),
    (r"^smtpsvc domain add .* partner\.org", {"partner.org"}),
    (r"^smtpsvc delete ", {"helena", "bob"}),
]


def _placeholders(argv: tuple[str, ...], tmp_path: Path) -> list[str]:
    """Paths and accounts that differ on the test machine."""
    replaced = []
    for word in argv:
        if word.startswith("/srv/mail/"):
            word = str(tmp_path / "homes" / word.removeprefix("/srv/mail/"))
        elif word == "/user:root":
            word = f"/user:{getpass.getuser()}"
        replaced.append(word)
    return replaced


def build_installation(tmp_path: Path, without: set[str]) -> None:
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("admin", "admin@example.test", "Admin-pw-123")
    make_pop3_service(start=False)  # nothing here should start a worker, even with a supervisor running
    services.create_imap_service(ip_address="127.0.0.1", port=free_port(), start=False)
    if "Lab server" in without:
        return
    default = "lab.example.test" if "study003.local" in without else "study003.local"
    server = make_server(
        name="Lab server", domain=default, node=services.local_node(), home_dir=tmp_path / "homes" / "lab-server"
    )
    if "partner.org" not in without:
        services.add_domain(server, "partner.org", type="remote")
    if "study003.local" in without:
        return
    for local_part in ("helena", "bob"):
        if local_part not in without:
            services.add_mailbox(server.default_domain, local_part, "Start-pw-123")
    message_id = mailstore.enqueue(
        server.home_dir,
        "helena@study003.local",
        ["someone@far.example"],
        [b"Subject: queued\r\n\r\nfor the queue examples\r\n"],
    )
    queue_dir = server.home_path / mailstore.QUEUE_DIR
    (queue_dir / f"{message_id}.eml").rename(queue_dir / "12.eml")
    engine.reconcile_queue(server)


@pytest.fixture
def installation_for(fast_hashing, tmp_path, monkeypatch):
    # start|pause|stop wait for the node's supervisor to report the state; none runs here (the
    # supervisor has its own tests), so the commands report at once what they asked for.
    monkeypatch.setattr(smtpsvc, "WAIT_S", 0)
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", os.environ["DJANGO_SETTINGS_MODULE"])
    tls.ensure_self_signed_certificate(tmp_path / "cert.pem", tmp_path / "key.pem", "lab.example.test")
    monkeypatch.chdir(tmp_path)

    def build(example: Example) -> list[str]:
        without = set().union(*(names for pattern, names in WITHOUT if re.search(pattern, example.text)))
        build_installation(tmp_path, without)
        return _placeholders(example.argv, tmp_path)

    return build


@dataclass
class Outcome:
    status: int
    stdout: str
    stderr: str = field(default="")


def run_like_manage_py(argv: list[str]) -> Outcome:
    """What `manage.py ARGV` does (ManagementUtility + run_from_argv), without closing the test's connection."""
    name, *arguments = argv
    command: BaseCommand = load_command_class(get_commands()[name], name)
    command._called_from_command_line = True
    parser = command.create_parser("manage.py", name)
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        options = parser.parse_args(arguments)
    except SystemExit as exit_:
        return Outcome(int(exit_.code or 0), stdout.getvalue(), stderr.getvalue())
    cmd_options = vars(options)
    args = cmd_options.pop("args", ())
    handle_default_options(options)  # where a positional named `settings` used to crash
    try:
        command.execute(*args, stdout=stdout, stderr=stderr, **cmd_options)
    except CommandError as error:
        return Outcome(error.returncode, stdout.getvalue(), f"CommandError: {error}")
    return Outcome(0, stdout.getvalue(), stderr.getvalue())


# --- the tests -----------------------------------------------------------------------------------------


def test_the_readmes_document_commands_and_every_long_running_one_is_named():
    assert len(RUNNABLE) >= 30, [str(e) for e in EXAMPLES]
    commands = {example.argv[0] for example in EXAMPLES}
    assert {"smtpsvc", "smtpqueue", "winpop", "pop3svc", "imapsvc", "api_token"} <= commands
    assert commands <= set(get_commands()) | set(LONG_RUNNING), commands - set(get_commands())
    assert any(e.argv[:2] == ("smtpqueue", "delivery") and len(e.argv) > 3 for e in RUNNABLE)


@pytest.mark.parametrize("example", RUNNABLE, ids=str)
def test_the_readme_example_runs(example: Example, installation_for, db, monkeypatch):
    # `changepassword` asks twice on the terminal: the same new password both times.
    monkeypatch.setattr(getpass, "getpass", lambda prompt="Password: ", stream=None: "Reset-pw-123")
    argv = installation_for(example)
    outcome = run_like_manage_py(argv)
    expected = EXPECTED_EXIT_STATUS.get(example.text, 0)
    assert outcome.status == expected, f"{example}\nstdout: {outcome.stdout}\nstderr: {outcome.stderr}"
    assert "Traceback" not in outcome.stdout + outcome.stderr


def test_the_smtpqueue_delivery_example_runs_as_a_real_manage_py_process(transactional_db, child_env, tmp_path):
    [example] = [
        e for e in RUNNABLE if e.argv[:2] == ("smtpqueue", "delivery") and "smart_host_password=secret" in e.argv
    ]
    build_installation(tmp_path, set())
    done = subprocess.run(
        [sys.executable, "manage.py", *example.argv],
        cwd=REPO_DIR,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "smart_host=relay.example.org" in done.stdout and "smart_host_password=********" in done.stdout
    assert "secret" not in done.stdout


def _actions(parser) -> Iterator:
    for action in parser._actions:
        yield action
        for subparser in (getattr(action, "choices", None) or {}).values() if hasattr(action, "add_parser") else ():
            yield from _actions(subparser)


def test_no_command_of_ours_has_an_argument_named_like_a_django_global_option():
    django_own = {(a.dest, tuple(a.option_strings)) for a in BaseCommand().create_parser("manage.py", "x")._actions}
    clashes = []
    for name, app in get_commands().items():
        if app not in ("servers", "api", "frontend"):
            continue
        parser = load_command_class(app, name).create_parser("manage.py", name)
        clashes += [
            f"{name}: {action.dest}"
            for action in _actions(parser)
            if action.dest in DJANGO_GLOBAL_DESTS and (action.dest, tuple(action.option_strings)) not in django_own
        ]
    assert clashes == []
