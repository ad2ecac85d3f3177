"""The drive's report: verdicts, timings, the table and the JSON."""

import json

import pytest

from pytest_netplayground.core.addressing import ConnectionKey, Endpoint
from pytest_netplayground.core.divergence import ByteMismatch
from pytest_netplayground.core.drive_plan import PlannedConnection
from pytest_netplayground.core.drive_report import (
    ConnectionResult,
    DriveReport,
    Timing,
    Verdict,
    recorded_timing,
)
from pytest_netplayground.core.events import ConnectionOpened, Data, Direction

C2S, S2C = Direction.C2S, Direction.S2C


def planned(conn: int, port: int = 80) -> PlannedConnection:
    opened = ConnectionOpened(1.0 + conn, conn, ("10.0.0.2", 40000 + conn), ("10.0.0.1", port))
    return PlannedConnection(opened, 0, opened.client, opened.server, float(conn))


def mismatch(conn: int) -> ByteMismatch:
    key = ConnectionKey("10.0.0.2", "10.0.0.1", 80)
    return ByteMismatch(conn, key, 1, S2C, 9, b"HTTP/1.0 200 OK", b"HTTP/1.0 404 Not Found")


def test_recorded_timing_counts_the_servers_first_and_last_bytes_from_the_opening():
    opened = ConnectionOpened(1.0, 3, ("10.0.0.2", 40000), ("10.0.0.1", 80))
    events = [
        Data(1.1, 3, C2S, b"GET / HTTP/1.0\r\n\r\n"),
        Data(1.25, 3, S2C, b"HTTP/1.0 200 OK\r\n"),
        Data(1.5, 3, S2C, b"body"),
        Data(1.75, 4, S2C, b"another connection"),
    ]
    assert recorded_timing(opened, events) == Timing(pytest.approx(0.25), pytest.approx(0.5))
    assert recorded_timing(opened, events[:1]) == Timing(None, None)


def test_verdicts_follow_failure_then_divergences():
    assert ConnectionResult(planned(0)).verdict is Verdict.IDENTICAL
    assert ConnectionResult(planned(0), divergences=[mismatch(0)]).verdict is Verdict.DIFFERS
    assert (
        ConnectionResult(planned(0), divergences=[mismatch(0)], failure="refused").verdict is Verdict.FAILED
    )


def test_a_report_is_ok_only_when_every_connection_is_identical():
    assert DriveReport([ConnectionResult(planned(0)), ConnectionResult(planned(1))]).ok
    assert not DriveReport([ConnectionResult(planned(0)), ConnectionResult(planned(1), failure="reset")]).ok


def test_the_table_counts_verdicts_by_server_port_and_details_only_what_went_otherwise():
    report = DriveReport(
        [
            ConnectionResult(planned(0), Timing(0.01, 0.02), Timing(0.01, 0.01)),
            ConnectionResult(planned(1), Timing(0.01, 0.02), Timing(0.01, 0.01), divergences=[mismatch(1)]),
            ConnectionResult(planned(2, port=5432), failure="refused (recorded: established)"),
        ]
    )
    assert report.by_port() == {
        80: {Verdict.IDENTICAL: 1, Verdict.DIFFERS: 1, Verdict.FAILED: 0},
        5432: {Verdict.IDENTICAL: 0, Verdict.DIFFERS: 0, Verdict.FAILED: 1},
    }
    text = report.format()
    assert text.splitlines()[0] == "3 connections driven: 1 identical, 1 differs, 1 failed"
    assert "#1 10.0.0.2:40001 -> 10.0.0.1:80: differs" in text
    assert "s2c: bytes differ at offset 9" in text
    assert "refused (recorded: established)" in text
    assert "#0 10.0.0.2:40000" not in text  # identical: counted, not detailed
    assert "#0 10.0.0.2:40000" in report.format(verbose=True)
    assert "median time to last byte: 20.0 ms live, 10.0 ms recorded (2.00x)" in text


def test_the_json_report_holds_every_connection_and_round_trips_through_json():
    report = DriveReport(
        [
            ConnectionResult(planned(0), Timing(0.01, 0.02)),
            ConnectionResult(planned(1), divergences=[mismatch(1)]),
        ]
    )
    data = json.loads(json.dumps(report.to_json()))
    assert data["summary"] == {
        "connections": 2,
        "identical": 1,
        "differs": 1,
        "failed": 0,
        "by_port": {"80": {"identical": 1, "differs": 1, "failed": 0}},
        "ok": False,
        "achieved_rate": None,
    }
    second = data["connections"][1]
    assert second["verdict"] == "differs"
    assert second["divergences"][0]["offset"] == 9
    assert second["divergences"][0]["direction"] == "s2c"
    assert second["divergences"][0]["actual"].startswith("HTTP/1.0 404")
    assert data["connections"][0]["live"] == {"first_byte": 0.01, "last_byte": 0.02}
    assert data["connections"][0]["server"] == str(Endpoint("10.0.0.1", 80))


def test_the_achieved_rate_counts_openings_between_the_first_and_the_last():
    results = [ConnectionResult(planned(i), started=i * 0.25) for i in range(5)]
    assert DriveReport(results).achieved_rate() == pytest.approx(4.0)
    assert DriveReport(results[:1]).achieved_rate() is None
    assert DriveReport([ConnectionResult(planned(0))]).to_json()["connections"][0]["started"] is None
