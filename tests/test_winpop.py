"""`manage.py winpop`: every verb of the Windows command, with its messages and exit codes."""

import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from servers import services
from servers.mailstore import deliver
from servers.models import Domain, GroupAddress, Mailbox
from tests.factories import PASSWORD, make_server

pytestmark = pytest.mark.django_db
REPO_DIR = Path(__file__).resolve().parent.parent


def winpop(*arguments: str) -> str:
    out = StringIO()
    call_command("winpop", *arguments, stdout=out)
    return out.getvalue()


@pytest.fixture
def server(node):
    return make_server(domain="first.test")


def test_add_creates_a_domain_on_the_first_server_and_a_mailbox_with_createuser(server):
    assert "Added domain study003.local" in winpop("add", "study003.local")
    assert "Added mailbox helena@study003.local" in winpop("add", "helena@study003.local", "/createuser", PASSWORD)

    mailbox = Mailbox.objects.get()
    assert (mailbox.address, mailbox.domain.server) == ("helena@study003.local", server)
    assert services.authenticate_mailbox("helena@study003.local", PASSWORD).mailbox_id == mailbox.pk


def test_add_refuses_a_weak_password_and_says_why(server):
    with pytest.raises(CommandError, match="upper-case letter"):
        winpop("add", "bob@first.test", "/createuser", "weakpass1")
    with pytest.raises(CommandError, match="/createuser PASSWORD"):
        winpop("add", "bob@first.test")


def test_delete_removes_a_mailbox_and_keeps_its_mail_unless_deleteuser(server):
    winpop("add", "kept@first.test", "/createuser", PASSWORD)
    winpop("add", "gone@first.test", "/createuser", PASSWORD)
    kept, gone = Mailbox.objects.get(local_part="kept").maildir, Mailbox.objects.get(local_part="gone").maildir

    assert "was kept" in winpop("delete", "kept@first.test")
    winpop("delete", "gone@first.test", "/deleteuser")

    assert not Mailbox.objects.exists()
    assert kept.is_dir()
    assert not gone.exists() or not any(gone.iterdir())


def test_delete_domain_removes_its_mailboxes_but_never_the_default_domain(server):
    winpop("add", "extra.test")
    winpop("add", "carol@extra.test", "/createuser", PASSWORD)

    assert "Deleted domain extra.test" in winpop("delete", "extra.test")
    assert not Domain.objects.filter(name="extra.test").exists()
    with pytest.raises(CommandError, match="default domain"):
        winpop("delete", "first.test")


def test_list_shows_domains_and_the_mailboxes_of_one(server):
    winpop("add", "alice@first.test", "/createuser", PASSWORD)

    assert "first.test" in winpop("list")
    assert "alice@first.test" in winpop("list", "first.test")


def test_lock_and_unlock_a_mailbox_and_a_domain(server):
    winpop("add", "alice@first.test", "/createuser", PASSWORD)

    winpop("lock", "alice@first.test")
    winpop("lock", "first.test")
    assert Mailbox.objects.get().is_locked and Domain.objects.get(name="first.test").is_locked
    winpop("unlock", "alice@first.test")
    winpop("unlock", "first.test")
    assert not Mailbox.objects.get().is_locked and not Domain.objects.get(name="first.test").is_locked


def test_stat_counts_mailboxes_messages_and_size(server):
    winpop("add", "alice@first.test", "/createuser", PASSWORD)
    deliver(Mailbox.objects.get().maildir, [b"Subject: x\r\n\r\n" + b"y" * 2046 + b"\r\n"])

    line = next(row for row in winpop("stat", "first.test").splitlines() if row.startswith("first.test"))
    assert line.split()[1:] == ["1", "1", "2.0"]


def test_changepwd_applies_the_policy_and_takes_effect(server):
    winpop("add", "alice@first.test", "/createuser", PASSWORD)

    with pytest.raises(CommandError):
        winpop("changepwd", "alice@first.test", "short")
    winpop("changepwd", "alice@first.test", "Another9pass")

    assert services.authenticate_mailbox("alice@first.test", "Another9pass")


def test_createquotafile_writes_maildirsize_and_checks_the_owner(server):
    winpop("add", "alice@first.test", "/createuser", PASSWORD)
    winpop("setquota", "alice@first.test", "100000", "50")

    winpop("createquotafile", "alice@first.test", "/user:root")
    with pytest.raises(CommandError, match="no user"):
        winpop("createquotafile", "alice@first.test", "/user:no-such-user-here")

    assert (Mailbox.objects.get().maildir / "maildirsize").read_text() == "100000S,50C\n0 0\n"


def test_group_and_catchall_additions(server):
    winpop("add", "alice@first.test", "/createuser", PASSWORD)
    winpop("add", "bob@first.test", "/createuser", PASSWORD)

    winpop("group", "add", "info@first.test", "alice@first.test", "bob@first.test")
    winpop("catchall", "bob@first.test")

    group = GroupAddress.objects.get(local_part="info")
    assert sorted(m.local_part for m in group.members.all()) == ["alice", "bob"]
    assert Mailbox.objects.get(is_catch_all=True).local_part == "bob"
    assert "info@first.test" in winpop("group", "list")
    winpop("group", "delete", "info@first.test")
    assert not GroupAddress.objects.filter(local_part="info").exists()


def test_help_and_errors_exit_as_a_shell_expects(server, child_env):
    help_text = winpop("help")
    assert "winpop add USER@DOMAIN /createuser PASSWORD" in help_text

    result = subprocess.run(
        [sys.executable, "manage.py", "winpop", "lock", "nobody@first.test"],
        cwd=REPO_DIR,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "There is no mailbox nobody@first.test" in result.stderr


# -- language -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "language"),
    [
        ({"LANG": "ru_RU.UTF-8"}, "ru"),
        ({"LANG": "en_US.UTF-8", "LC_MESSAGES": "ru_RU.UTF-8"}, "ru"),
        ({"LC_ALL": "C.UTF-8", "LANG": "ru_RU.UTF-8"}, "en"),
        ({"LANG": "de_DE.UTF-8"}, "en"),
        ({}, "en"),
    ],
)
def test_the_shell_locale_chooses_the_language_as_posix_orders_the_variables(environ, language):
    from servers.management.language import shell_language

    assert shell_language(environ) == language


def run_winpop(child_env: dict, *arguments: str, **environ: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in child_env.items() if key not in ("LC_ALL", "LC_MESSAGES", "LANG")}
    return subprocess.run(
        [sys.executable, "manage.py", "winpop", *arguments],
        cwd=REPO_DIR,
        env={**env, **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_and_a_refusal_are_in_russian_under_a_russian_locale(server, child_env):
    help_run = run_winpop(child_env, "help", LANG="ru_RU.UTF-8")
    assert "winpop add ИМЯ@ДОМЕН /createuser ПАРОЛЬ        почтовый ящик" in help_run.stdout
    refused = run_winpop(child_env, "frobnicate", LANG="ru_RU.UTF-8")
    assert refused.returncode == 1 and "Неизвестная команда 'frobnicate'" in refused.stderr
    missing = run_winpop(child_env, "group", "delete", "nobody@first.test", LANG="ru_RU.UTF-8")
    assert missing.returncode == 1 and "Группы nobody@first.test нет." in missing.stderr


def test_the_language_option_wins_over_the_locale(server, child_env):
    english = run_winpop(child_env, "--language", "en", "help", LANG="ru_RU.UTF-8")
    assert "winpop add USER@DOMAIN /createuser PASSWORD" in english.stdout
    russian = winpop("--language", "ru", "add", "study003.local")
    assert russian.strip() == "Домен study003.local добавлен."
