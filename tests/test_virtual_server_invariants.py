"""The invariants of virtual servers and domains, enforced by the services for every face."""

import pytest
from django.conf import settings

from servers import services
from servers.models import AuditEntry, DomainType, ObservedState, ServiceState, VirtualServer
from servers.services import RefusedError
from tests.factories import make_server

pytestmark = pytest.mark.django_db


def test_creating_a_server_makes_the_iis_home_directory_layout(tmp_path):
    server = make_server(home_dir=tmp_path / "mailroot")

    for sub in ("BadMail", "Drop", "Pickup", "Queue"):
        assert (tmp_path / "mailroot" / sub).is_dir()
    assert server.home_dir == str(tmp_path / "mailroot")


def test_a_new_server_has_its_default_domain_as_a_local_domain():
    server = make_server(domain="Lab.Example.TEST.")

    default = server.default_domain
    assert default.name == "lab.example.test"
    assert default.type == DomainType.LOCAL
    assert list(server.domains.values_list("name", flat=True)) == ["lab.example.test"]


def test_ip_address_defaults_to_all_unassigned():
    server = services.create_virtual_server(
        name="any",
        default_domain="any.test",
        ip_address=None,
        port=2600,
        home_dir=settings.VAR_DIR / "any",
        start=False,
    )
    assert server.ip_address == "0.0.0.0"


def test_the_home_directory_can_never_be_changed(tmp_path):
    server = make_server(home_dir=tmp_path / "home")

    with pytest.raises(RefusedError) as error:
        services.update_virtual_server(server, home_dir=str(tmp_path / "elsewhere"))

    assert error.value.field == "home_dir"
    assert VirtualServer.objects.get(pk=server.pk).home_dir == str(tmp_path / "home")


def test_every_other_setting_can_be_changed(tmp_path):
    server = make_server(home_dir=tmp_path / "home")

    services.update_virtual_server(server, name="Renamed", ip_address="127.0.0.2", port=2601, max_message_size_kb=4096)

    server.refresh_from_db()
    assert (server.name, server.ip_address, server.port, server.max_message_size_kb) == (
        "Renamed",
        "127.0.0.2",
        2601,
        4096,
    )


def test_a_configuration_change_bumps_the_version_workers_reload_on():
    server = make_server()
    version = server.config_version

    services.update_virtual_server(server, max_message_size_kb=100)
    services.add_domain(server, "more.test")

    server.refresh_from_db()
    assert server.config_version == version + 2


def test_a_home_directory_inside_another_servers_home_is_refused(tmp_path):
    make_server(home_dir=tmp_path / "outer")

    with pytest.raises(RefusedError, match="overlaps"):
        make_server(home_dir=tmp_path / "outer" / "inner")
    with pytest.raises(RefusedError, match="overlaps"):
        make_server(home_dir=tmp_path)


def test_two_running_servers_of_a_node_cannot_share_an_ip_and_port():
    first = make_server(port=2700, start=True)

    with pytest.raises(RefusedError) as error:
        make_server(port=2700, start=True)

    assert first.name in error.value.message
    assert error.value.field == "port"


def test_all_unassigned_conflicts_with_a_specific_address_on_the_same_port():
    make_server(port=2701, ip_address="127.0.0.1", start=True)

    with pytest.raises(RefusedError):
        make_server(port=2701, ip_address="0.0.0.0", start=True)


def test_a_stopped_server_may_share_an_address_but_cannot_start_while_the_other_runs():
    make_server(port=2702, start=True)
    second = make_server(port=2702, start=False)

    with pytest.raises(RefusedError):
        services.start_server(second)

    assert VirtualServer.objects.get(pk=second.pk).desired_state == ServiceState.STOPPED


def test_moving_a_running_server_onto_a_used_port_is_refused():
    make_server(port=2703, start=True)
    other = make_server(port=2704, start=True)

    with pytest.raises(RefusedError):
        services.update_virtual_server(other, port=2703)


def test_server_names_are_unique_per_node():
    make_server(name="Mail")

    with pytest.raises(RefusedError) as error:
        make_server(name="Mail")
    assert error.value.field == "name"


def test_invalid_ports_and_addresses_are_refused_with_the_field_named():
    with pytest.raises(RefusedError) as bad_port:
        make_server(port=70000)
    with pytest.raises(RefusedError) as bad_ip:
        make_server(ip_address="300.1.1.1")

    assert bad_port.value.field == "port"
    assert bad_ip.value.field == "ip_address"


def test_the_default_domain_cannot_be_deleted():
    server = make_server()
    services.add_domain(server, "second.test")

    with pytest.raises(RefusedError, match="default domain cannot be deleted"):
        services.remove_domain(server.default_domain)


def test_the_default_domain_cannot_become_another_type():
    server = make_server()

    with pytest.raises(RefusedError, match="stay a local domain"):
        services.change_domain_type(server.default_domain, "remote")


def test_a_server_keeps_at_least_one_local_domain():
    server = make_server()
    other = services.add_domain(server, "other.test")
    services.set_default_domain(other)

    services.remove_domain(server.domains.get(name=server.domains.exclude(pk=other.pk).get().name))

    with pytest.raises(RefusedError):
        services.remove_domain(other)
    assert server.domains.filter(type=DomainType.LOCAL).count() == 1


def test_only_a_local_domain_can_be_the_default():
    server = make_server()
    remote = services.add_domain(server, "partner.test", type="remote", relay_allowed=True)

    with pytest.raises(RefusedError, match="Only a local domain"):
        services.set_default_domain(remote)


def test_there_is_always_exactly_one_default_domain():
    server = make_server()
    second = services.add_domain(server, "second.test")

    services.set_default_domain(second)

    assert list(server.domains.filter(is_default=True).values_list("name", flat=True)) == ["second.test"]


def test_an_alias_domain_points_at_a_local_domain_of_the_same_server():
    server = make_server(domain="local.test")
    other_server = make_server(domain="elsewhere.test")

    alias = services.add_domain(server, "alias.test", type="alias", alias_of="local.test")
    assert alias.alias_of == server.default_domain

    with pytest.raises(RefusedError):
        services.add_domain(server, "bad-alias.test", type="alias", alias_of=other_server.default_domain)
    with pytest.raises(RefusedError):
        services.add_domain(server, "no-target.test", type="alias")


def test_domain_names_are_stored_canonical():
    server = make_server()

    idn = services.add_domain(server, "Пример.Тест.")
    upper = services.add_domain(server, "UPPER.Example.Test")

    assert idn.name == "xn--e1afmkfd.xn--e1aybc"
    assert upper.name == "upper.example.test"
    with pytest.raises(RefusedError):
        services.add_domain(server, "upper.example.test.")
    with pytest.raises(RefusedError):
        services.add_domain(server, "bad..name")


def test_stopping_the_node_service_caps_every_servers_effective_state(node):
    running = make_server(start=True)
    paused = make_server(start=True)
    services.pause_server(paused)

    services.set_node_service_state(node, ServiceState.PAUSED)
    running.refresh_from_db()
    assert running.effective_desired_state == ServiceState.PAUSED

    services.set_node_service_state(node, ServiceState.STOPPED)
    paused.refresh_from_db()
    assert paused.effective_desired_state == ServiceState.STOPPED
    assert paused.desired_state == ServiceState.PAUSED


def test_every_change_lands_in_the_audit_log():
    server = make_server()
    services.update_virtual_server(server, port=2800, actor="alice")
    services.stop_server(server, actor="alice")
    services.start_server(server, actor="bob")

    actions = list(
        AuditEntry.objects.filter(object_id=str(server.pk), object_type="virtualserver")
        .order_by("id")
        .values_list("actor", "action")
    )
    assert actions[1:] == [("alice", "update_virtual_server"), ("bob", "start_virtual_server")]
    update = AuditEntry.objects.get(action="update_virtual_server")
    assert (update.before["port"], update.after["port"]) != (2800, 2800)
    assert update.after["port"] == 2800


def test_a_new_server_is_not_shown_running_before_a_worker_reports():
    server = make_server(start=True)
    assert server.state == ObservedState.STOPPED


def test_an_update_that_changes_nothing_neither_reloads_nor_audits():
    server = make_server()
    version = server.config_version
    entries = AuditEntry.objects.count()

    services.update_virtual_server(server, port=server.port, name=server.name)

    server.refresh_from_db()
    assert (server.config_version, AuditEntry.objects.count()) == (version, entries)


def test_a_home_directory_that_cannot_be_created_is_a_field_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    with pytest.raises(RefusedError) as error:
        make_server(home_dir=blocker / "home")
    assert error.value.field == "home_dir"


def test_a_local_domain_turned_remote_takes_its_group_addresses_with_it():
    server = make_server()
    other = services.add_domain(server, "other.test")
    assert other.groups.filter(local_part="postmaster").exists()

    services.change_domain_type(other, "remote")

    assert not other.groups.exists()
