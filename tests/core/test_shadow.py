"""Shadow comparison without sockets: two answers fed in pieces, the findings and the report."""

from __future__ import annotations

import random

import pytest

from pytest_netplayground.core.addressing import ConnectionKey, Endpoint
from pytest_netplayground.core.divergence import ByteMismatch, ExtraBytes, MissingBytes, Stall
from pytest_netplayground.core.noise import IgnoreRule
from pytest_netplayground.core.shadow import (
    AnswerDiff,
    ShadowSpec,
    endpoint_parts,
    parse_shadow_flag,
    shadow_pairs,
)
from pytest_netplayground.core.shadow_report import ShadowFailed, ShadowOutcome, ShadowReport, verdict
from pytest_netplayground.errors import ConfigError
from pytest_netplayground.settings import merge

KEY = ConnectionKey("10.0.0.2", "10.0.0.1", 80)
ANSWER = b"HTTP/1.0 200 OK\r\nDate: Mon, 30 Nov 2026 15:00:00 GMT\r\nContent-Length: 5\r\n\r\nhello" * 3


def pieces(data: bytes, rng: random.Random):
    at = 0
    while at < len(data):
        step = rng.randint(1, 40)
        yield data[at : at + step]
        at += step


def diff_of(primary: bytes, candidate: bytes, seed: int = 1, rules=(), limit=1 << 20) -> AnswerDiff:
    """Both answers fed interleaved in random pieces, as a loop would see them."""
    rng = random.Random(seed)
    diff = AnswerDiff(tuple(IgnoreRule.parse(r) for r in rules), limit)
    sides = [("primary", pieces(primary, rng)), ("candidate", pieces(candidate, rng))]
    while sides:
        side = rng.choice(sides)
        piece = next(side[1], None)
        if piece is None:
            sides.remove(side)
        else:
            diff.feed(side[0], piece)
    return diff


def findings(diff: AnswerDiff, complete=True, cut=False):
    return diff.findings(4, KEY, 2, complete=complete, cut=cut, waited=5.0)


@pytest.mark.parametrize("seed", range(5))
def test_identical_answers_have_no_findings_and_keep_no_bytes(seed):
    diff = diff_of(ANSWER, ANSWER, seed)
    assert findings(diff) == []
    assert len(diff.primary) == len(diff.candidate) == 0
    assert diff.offset == len(ANSWER)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("rules", [(), ("Date: [^\r]*",)])
def test_a_changed_byte_is_found_at_its_offset_with_context(seed, rules):
    at = ANSWER.index(b"hello", 100)
    changed = ANSWER[:at] + b"HELLO" + ANSWER[at + 5 :]
    (found,) = findings(diff_of(ANSWER, changed, seed, rules))
    assert isinstance(found, ByteMismatch)
    assert found.offset == at and found.direction.value == "s2c"
    assert (found.conn, found.key, found.ordinal) == (4, KEY, 2)
    start = found.snippet_offset
    assert start == at - 16
    assert found.expected == ANSWER[start : at + 48]
    assert found.actual == changed[start : at + 48]


def test_ignore_rules_overlook_a_differing_date_of_another_length():
    other = ANSWER.replace(b"Mon, 30 Nov 2026 15:00:00 GMT", b"Tue, 1 Dec 2026 9:00:00 GMT")
    assert findings(diff_of(ANSWER, other)) != []
    assert findings(diff_of(ANSWER, other, rules=("Date: [^\r]*",))) == []
    # A rule scoped to the other direction or another port does not apply.
    spec = ShadowSpec(Endpoint("10.0.0.1", 80), Endpoint("10.0.0.3", 80), ignore=["c2s:Date", "81:Date", "80:s2c:x"])
    assert [str(rule) for rule in spec.rules] == ["80:s2c:x"]


@pytest.mark.parametrize("rules", [(), ("Date: [^\r]*",)])
def test_a_shorter_answer_is_missing_bytes_once_ended_and_a_stall_if_not(rules):
    short = ANSWER[:-7]
    (missing,) = findings(diff_of(ANSWER, short, rules=rules))
    assert isinstance(missing, MissingBytes)
    assert (missing.sent, missing.recorded) == (len(short), len(ANSWER))
    assert missing.expected.endswith(ANSWER[-7:])
    (stall,) = findings(diff_of(ANSWER, short, rules=rules), complete=False)
    assert isinstance(stall, Stall) and "last 7 bytes" in stall.waiting_for
    # Cut short by a reset: only what both sent is compared.
    assert findings(diff_of(ANSWER, short, rules=rules), cut=True) == []


@pytest.mark.parametrize("rules", [(), ("Date: [^\r]*",)])
def test_a_longer_answer_is_extra_bytes(rules):
    (extra,) = findings(diff_of(ANSWER, ANSWER + b"more", rules=rules))
    assert isinstance(extra, ExtraBytes)
    assert (extra.offset, extra.sent) == (len(ANSWER), len(ANSWER) + 4)
    assert extra.actual.endswith(b"more")


def test_a_side_running_too_far_ahead_overflows_and_bytes_after_a_difference_are_not_kept():
    diff = AnswerDiff(limit=100)
    diff.feed("primary", b"x" * 100)
    assert not diff.overflow
    diff.feed("primary", b"x")
    assert diff.overflow == "primary"
    diff = AnswerDiff(limit=100)
    diff.feed("primary", b"a" * 10)
    diff.feed("candidate", b"b" * 10)
    assert diff.differs
    for _ in range(100):
        diff.feed("candidate", b"c" * 1000)
    assert len(diff.candidate) <= 48 and not diff.overflow


def test_endpoints_and_flags_parse_or_say_what_is_wrong():
    assert endpoint_parts("10.0.0.1:80") == ("10.0.0.1", 80)
    assert endpoint_parts("web") == ("web", None)
    assert endpoint_parts("[fd00::1]:8080") == ("fd00::1", 8080)
    assert parse_shadow_flag("web:80=cand:8080") == ("web:80", "cand:8080")
    for bad in ("web:99999", "a:b:c", ""):
        with pytest.raises(ConfigError):
            endpoint_parts(bad)
    for bad in ("web:80", "=x:1", "web:80="):
        with pytest.raises(ConfigError, match="PRIMARY=CANDIDATE"):
            parse_shadow_flag(bad)
    with pytest.raises(ConfigError, match="must differ"):
        ShadowSpec(Endpoint("10.0.0.1", 80), Endpoint("10.0.0.1", 80))
    with pytest.raises(ConfigError, match="buffer"):
        ShadowSpec(Endpoint("10.0.0.1", 80), Endpoint("10.0.0.3", 80), buffer=0)
    with pytest.raises(ConfigError):
        ShadowSpec(Endpoint("10.0.0.1", 80), Endpoint("10.0.0.3", 80), patience=-1)


def test_the_report_counts_outcomes_and_shows_the_difference():
    client = Endpoint("10.0.0.2", 40000)
    at = ANSWER.index(b"hello")
    changed = ANSWER[:at] + b"HELLO" + ANSWER[at + 5 :]
    same = verdict(1, KEY, 1, client, [], "", primary_first=0.002, candidate_first=0.004)
    differing = verdict(2, KEY, 2, client, findings(diff_of(ANSWER, changed)), "")
    failed = verdict(3, KEY, 3, client, [], "the candidate refused the connection")
    stalled = verdict(4, KEY, 4, client, findings(diff_of(ANSWER, b""), complete=False), "")
    report = ShadowReport(Endpoint("10.0.0.1", 80), Endpoint("10.0.0.3", 80), [same, differing, failed, stalled], 1)
    assert [c.outcome for c in report.connections] == [
        ShadowOutcome.IDENTICAL, ShadowOutcome.DIFFERING, ShadowOutcome.FAILED, ShadowOutcome.FAILED
    ]
    assert (report.mirrored, report.identical, report.differing, report.failed) == (4, 1, 1, 2)
    assert not report.ok and not report
    assert isinstance(failed.items[0], ShadowFailed)
    text = report.format()
    assert text.splitlines()[0] == (
        "shadow 10.0.0.1:80 -> 10.0.0.3:80: 4 connections mirrored, 1 identical, 1 differing, 2 failed "
        "(1 still in flight); first answer byte, median: primary 2.0 ms, candidate 4.0 ms"
    )
    assert f"s2c: bytes differ at offset {at}" in text
    assert "shadow failed: the candidate refused the connection" in text
    assert "HELLO" in text and "hello" in text
    assert ShadowReport(Endpoint("10.0.0.1", 80), Endpoint("10.0.0.3", 80), [same]).ok


def test_the_shadow_setting_takes_strings_pairs_or_a_dict_and_refuses_the_rest():
    want = (("10.0.0.1:80", "10.0.0.3:8080"),)
    assert shadow_pairs("10.0.0.1:80=10.0.0.3:8080") == want
    assert shadow_pairs([("10.0.0.1:80", "10.0.0.3:8080")]) == want
    assert shadow_pairs({"10.0.0.1:80": "10.0.0.3:8080"}) == want
    assert merge([("marker", {"shadow": ["10.0.0.1:80=10.0.0.3"]})]).shadow == (("10.0.0.1:80", "10.0.0.3"),)
    for bad, problem in ((["10.0.0.1=10.0.0.3"], "needs its port"), ([1], "PRIMARY=CANDIDATE"), (5, "shadow takes")):
        with pytest.raises(ConfigError, match=problem):
            merge([("marker", {"shadow": bad})])
