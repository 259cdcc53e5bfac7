"""Mailboxes, groups, catch-all and locks in the service layer, and where the SMTP path routes mail."""

import pytest

from servers import services
from servers.models import GroupAddress, Logon, Mailbox
from servers.services import LoginRefusedError, RefusedError
from servers.snapshot import load_snapshot
from tests.factories import PASSWORD, make_mailbox, make_server

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("Sh0rt", "at least 8 characters"),
        ("alllowercase1", "upper-case letter"),
        ("ALLUPPERCASE1", "lower-case letter"),
        ("NoDigitsHere", "digit"),
    ],
)
def test_the_password_policy_says_which_rule_failed(password, rule):
    server = make_server()

    with pytest.raises(RefusedError) as error:
        make_mailbox(server, "alice", password=password)

    assert rule in error.value.message
    assert error.value.field == "password"
    assert not Mailbox.objects.exists()


def test_a_mailbox_gets_a_maildir_and_a_hashed_password():
    server = make_server(domain="lab.test")

    mailbox = make_mailbox(server, "Alice", display_name="Alice Liddell")

    assert mailbox.address == "alice@lab.test"
    assert mailbox.password.startswith("argon2$")
    assert PASSWORD not in mailbox.password
    for sub in ("tmp", "new", "cur"):
        assert (mailbox.maildir / sub).is_dir()


def test_every_local_domain_gets_a_postmaster_address():
    server = make_server(domain="lab.test")
    services.add_domain(server, "second.test")
    services.add_domain(server, "partner.test", type="remote")

    postmasters = set(GroupAddress.objects.filter(local_part="postmaster").values_list("domain__name", flat=True))

    assert postmasters == {"lab.test", "second.test"}


def test_mailboxes_live_only_in_local_domains():
    server = make_server(domain="lab.test")
    alias = services.add_domain(server, "alias.test", type="alias", alias_of="lab.test")

    with pytest.raises(RefusedError, match="not a local domain"):
        services.add_mailbox(alias, "bob", PASSWORD)


def test_an_address_is_either_a_mailbox_or_a_group_not_both():
    server = make_server(domain="lab.test")
    make_mailbox(server, "info")

    with pytest.raises(RefusedError, match="already a mailbox"):
        services.add_group(server.default_domain, "info")
    with pytest.raises(RefusedError, match="already a group"):
        make_mailbox(server, "postmaster")


def test_unknown_user_and_wrong_password_are_refused_alike():
    server = make_server(domain="lab.test")
    make_mailbox(server, "alice")

    with pytest.raises(LoginRefusedError) as unknown:
        services.authenticate_mailbox("nobody@lab.test", PASSWORD)
    with pytest.raises(LoginRefusedError) as wrong:
        services.authenticate_mailbox("alice@lab.test", "Wrong-pass1")

    assert unknown.value.reason == wrong.value.reason == "credentials"
    assert services.authenticate_mailbox("ALICE@Lab.Test", PASSWORD).address == "alice@lab.test"


def test_a_locked_mailbox_or_domain_cannot_sign_in_but_says_so_only_to_the_right_password():
    server = make_server(domain="lab.test")
    alice = make_mailbox(server, "alice")
    services.set_mailbox_lock(alice, True)

    with pytest.raises(LoginRefusedError) as locked:
        services.authenticate_mailbox("alice@lab.test", PASSWORD)
    with pytest.raises(LoginRefusedError) as wrong:
        services.authenticate_mailbox("alice@lab.test", "Wrong-pass1")
    assert (locked.value.reason, wrong.value.reason) == ("locked", "credentials")

    services.set_mailbox_lock(alice, False)
    services.set_domain_lock(server.default_domain, True)
    with pytest.raises(LoginRefusedError, match="locked"):
        services.authenticate_mailbox("alice@lab.test", PASSWORD)


def test_a_password_change_takes_effect_at_once():
    server = make_server(domain="lab.test")
    alice = make_mailbox(server, "alice")

    services.change_password(alice, "Newpass456")

    with pytest.raises(LoginRefusedError):
        services.authenticate_mailbox("alice@lab.test", PASSWORD)
    assert services.authenticate_mailbox("alice@lab.test", "Newpass456").mailbox_id == alice.pk


def test_logons_are_recorded_with_the_client_address():
    server = make_server(domain="lab.test")
    alice = make_mailbox(server, "alice")

    services.record_logon(alice.pk, "127.0.0.9")

    alice.refresh_from_db()
    assert alice.last_logon_from == "127.0.0.9"
    assert Logon.objects.get().client_address == "127.0.0.9"


def test_deleting_a_mailbox_keeps_its_mail_unless_asked(django_capture_on_commit_callbacks):
    server = make_server(domain="lab.test")
    kept = make_mailbox(server, "kept")
    removed = make_mailbox(server, "removed")

    with django_capture_on_commit_callbacks(execute=True):
        services.delete_mailbox(kept)
        services.delete_mailbox(removed, remove_mail=True)

    assert kept.maildir.is_dir()
    assert not removed.maildir.exists()


def test_a_domain_with_mailboxes_cannot_be_removed():
    server = make_server(domain="lab.test")
    other = services.add_domain(server, "other.test")
    services.add_mailbox(other, "carol", PASSWORD)

    with pytest.raises(RefusedError, match="still has mailboxes"):
        services.remove_domain(other)


def test_only_one_catch_all_per_domain():
    server = make_server(domain="lab.test")
    first = make_mailbox(server, "first")
    second = make_mailbox(server, "second")

    services.set_catch_all(first)
    services.set_catch_all(second)

    assert list(Mailbox.objects.filter(is_catch_all=True).values_list("local_part", flat=True)) == ["second"]


def test_the_smtp_snapshot_routes_each_kind_of_address():
    server = make_server(domain="lab.test")
    alice = make_mailbox(server, "alice")
    bob = make_mailbox(server, "bob")
    services.add_group(server.default_domain, "info", [alice, bob])
    services.add_domain(server, "alias.test", type="alias", alias_of="lab.test")
    services.add_domain(server, "empty.test")

    snapshot = load_snapshot(server.pk)

    def mailboxes_for(local_part, domain):
        destination = snapshot.destination(local_part, domain)
        return None if destination is None else sorted(m.address for m in destination.mailboxes)

    assert mailboxes_for("alice", "lab.test") == ["alice@lab.test"]
    assert mailboxes_for("alice", "alias.test") == ["alice@lab.test"]
    assert mailboxes_for("info", "lab.test") == ["alice@lab.test", "bob@lab.test"]
    assert mailboxes_for("nobody", "lab.test") is None
    assert snapshot.destination("postmaster", "lab.test").to_drop
    assert snapshot.destination("anyone", "empty.test").to_drop

    services.set_catch_all(bob)
    assert sorted(m.address for m in load_snapshot(server.pk).destination("nobody", "lab.test").mailboxes) == [
        "bob@lab.test"
    ]


def test_a_verified_credential_cache_never_outlives_a_password_change_or_a_lock():
    from servers.services.mailboxes import VerifiedCredentials

    server = make_server(domain="lab.test")
    alice = make_mailbox(server, "alice")
    cache = VerifiedCredentials()
    services.authenticate_mailbox("alice@lab.test", PASSWORD, cache=cache)
    assert cache.matches(alice.pk, Mailbox.objects.get(pk=alice.pk).password, PASSWORD)

    services.change_password(alice, "Newpass456")

    with pytest.raises(LoginRefusedError):
        services.authenticate_mailbox("alice@lab.test", PASSWORD, cache=cache)
    services.authenticate_mailbox("alice@lab.test", "Newpass456", cache=cache)
    services.set_mailbox_lock(alice, True)
    with pytest.raises(LoginRefusedError, match="locked"):
        services.authenticate_mailbox("alice@lab.test", "Newpass456", cache=cache)
