"""The drive's plan: sampling, copies, mapping and start times, decided without sockets."""

import pytest

from pytest_netplayground.core.addressing import Endpoint
from pytest_netplayground.core.drive_plan import DriveOptions, chosen, plan_drive
from pytest_netplayground.core.events import ConnectionOpened, Outcome
from pytest_netplayground.errors import ConfigError

SERVER = ("10.0.0.1", 80)


def recorded(count: int = 4, spacing: float = 0.5) -> list[ConnectionOpened]:
    return [ConnectionOpened(10.0 + i * spacing, i, ("10.0.0.2", 40000 + i), SERVER) for i in range(count)]


def test_connections_start_at_their_recorded_offsets_divided_by_the_speed():
    plan = plan_drive(recorded(), DriveOptions(speed=2.0))
    assert [p.start for p in plan] == [0.0, 0.25, 0.5, 0.75]
    assert [p.client for p in plan] == [Endpoint("10.0.0.2", 40000 + i) for i in range(4)]
    assert all(p.server == Endpoint(*SERVER) for p in plan)


def test_rate_spaces_the_connections_evenly_in_recorded_order():
    plan = plan_drive(list(reversed(recorded())), DriveOptions(rate=10))
    assert [p.opened.conn for p in plan] == [0, 1, 2, 3]
    assert [p.start for p in plan] == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_flood_starts_everything_at_once():
    assert {p.start for p in plan_drive(recorded(), DriveOptions(pacing="flood"))} == {0.0}


def test_multiply_plays_each_connection_k_times_at_once_from_distinct_ports():
    plan = plan_drive(recorded(3), DriveOptions(multiply=10))
    assert len(plan) == 30
    assert len({p.client for p in plan}) == 30
    for conn in range(3):
        copies = [p for p in plan if p.opened.conn == conn]
        assert sorted(p.copy for p in copies) == list(range(10))
        assert len({p.start for p in copies}) == 1
        assert next(p for p in copies if p.copy == 0).client.port == 40000 + conn  # the recorded peer


def test_the_extra_copies_never_take_a_recorded_clients_port():
    opened = [
        ConnectionOpened(0.0, 0, ("10.0.0.2", 32768), SERVER),
        ConnectionOpened(0.1, 1, ("10.0.0.2", 32770), SERVER),
    ]
    ports = [p.client.port for p in plan_drive(opened, DriveOptions(multiply=3))]
    assert sorted(ports) == [32768, 32769, 32770, 32771, 32772, 32773]


def test_sample_chooses_the_same_connections_every_time_and_about_its_share():
    many = recorded(2000, 0.001)
    first = [p.opened.conn for p in plan_drive(many, DriveOptions(sample=0.25))]
    again = [p.opened.conn for p in plan_drive(many, DriveOptions(sample=0.25))]
    assert first == again
    assert 400 < len(first) < 600
    assert all(chosen(o, 1.0) for o in many)


def test_a_larger_sample_keeps_every_connection_a_smaller_one_chose():
    many = recorded(500, 0.001)
    small = {p.opened.conn for p in plan_drive(many, DriveOptions(sample=0.2))}
    large = {p.opened.conn for p in plan_drive(many, DriveOptions(sample=0.6))}
    assert small < large


def test_mapping_moves_servers_and_clients():
    options = DriveOptions(mapping={"10.0.0.1": "10.0.0.5"})
    assert options.mapping == (("10.0.0.1", "10.0.0.5"),)
    assert DriveOptions(mapping=["10.0.0.1=10.0.0.5"]) == options
    plan = plan_drive(recorded(1), options)
    assert plan[0].server == Endpoint("10.0.0.5", 80)
    assert plan[0].client.host == "10.0.0.2"


def test_only_plays_the_connections_to_the_servers_it_names():
    opened = [
        ConnectionOpened(0.0, 0, ("10.0.0.2", 40000), ("10.0.0.1", 80)),
        ConnectionOpened(0.1, 1, ("10.0.0.1", 40001), ("10.0.0.3", 5432)),  # the server's own, to its database
        ConnectionOpened(0.2, 2, ("10.0.0.2", 40002), ("fd00::1", 80)),
    ]

    def conns(only):
        return [p.opened.conn for p in plan_drive(opened, DriveOptions(only=only))]

    assert conns(()) == [0, 1, 2]
    assert conns(["10.0.0.1:80"]) == [0]
    assert conns("80") == [0, 2]
    assert conns(["10.0.0.3"]) == [1]
    assert conns(["[fd00::1]:80", "10.0.0.3:5432"]) == [1, 2]
    with pytest.raises(ConfigError, match=r"only 10.0.0.9 matches no recorded connection; .* 10.0.0.1:80"):
        conns(["10.0.0.9"])


def test_refused_connections_are_planned_too():
    opened = [ConnectionOpened(0.0, 0, ("10.0.0.2", 40000), SERVER, Outcome.REFUSED)]
    assert [p.opened.outcome for p in plan_drive(opened, DriveOptions())] == [Outcome.REFUSED]


@pytest.mark.parametrize(
    "options, named",
    [
        ({"multiply": 0}, "multiply"),
        ({"multiply": "many"}, "multiply"),
        ({"sample": 0}, "sample"),
        ({"sample": 1.5}, "sample"),
        ({"rate": -1}, "rate"),
        ({"speed": 0}, "speed"),
        ({"mapping": ["10.0.0.1"]}, "OLD=NEW"),
        ({"pacing": "fast"}, "pacing"),
        ({"only": ["10.0.0.1:http"]}, "only"),
        ({"only": ["nowhere"]}, "only"),
    ],
)
def test_bad_options_are_clear_errors_naming_the_option(options, named):
    with pytest.raises(ConfigError, match=named):
        DriveOptions(**options)
