"""Reading the log back through the REAL server: events and the gap lines a cut or repair leaves,
as typed items."""

from __future__ import annotations

import itertools

import pytest

import mcplog
from _server import ADMIN_KEY, WRITER_KEY

# The fewest bytes a stored frame takes (the server's storage-format.md, "Cuts at start-up").
FRAME_BYTES_MIN = 34


def _post(server, interaction_id: str) -> int:
    import json

    body = json.dumps(
        {"action": "interaction_start", "interaction_id": interaction_id, "mcp_id": "demo_mcp", "timestamp": 1.0e9}
    ).encode()
    status, answer = server.request("POST", "/api/v2/interactions", body)
    assert status == 200, answer
    return json.loads(answer)["seq"]


def test_replay_yields_events_then_the_gap_a_cut_left_then_new_events(make_server):
    server = make_server().start()
    seqs = [_post(server, f"replay-{i}") for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    server.stop()
    # Bytes that do not check out at the end of the last segment: the next start cuts them, keeps
    # them in quarantine, and numbering goes on past every seq they may have held.
    segments = sorted((server.workdir / "data" / "segments").glob("*.seg"))
    garbage = bytes((i * 37 + 11) % 251 for i in range(340))
    with open(segments[-1], "ab") as f:
        f.write(garbage)
    server.start()
    next_seq = 6 + len(garbage) // FRAME_BYTES_MIN
    assert _post(server, "after-cut") == next_seq

    items = list(mcplog.replay(server.url, ADMIN_KEY))
    assert [type(i) for i in items] == [mcplog.ReplayEvent] * 5 + [mcplog.Gap, mcplog.ReplayEvent]
    assert [i.seq for i in items if isinstance(i, mcplog.ReplayEvent)] == [1, 2, 3, 4, 5, next_seq]
    assert items[5] == mcplog.Gap(after_seq=5, next_seq=next_seq, reason="cut")
    assert items[0].event["interaction_id"] == "replay-0"
    assert items[6].event["interaction_id"] == "after-cut"

    # From inside the gap, with a limit, and following: the gap first, from the cursor on.
    follow = mcplog.replay(server.url, ADMIN_KEY, after_seq=7, follow=True, timeout=10)
    first_two = list(itertools.islice(follow, 2))
    assert first_two[0] == mcplog.Gap(after_seq=7, next_seq=next_seq, reason="cut")
    assert first_two[1].seq == next_seq
    follow.close()
    limited = list(mcplog.replay(server.url, ADMIN_KEY, limit=2))
    assert [i.seq for i in limited] == [1, 2]

    # The client of a writer key replays its own mcp_id, gap lines included.
    client = mcplog.Client(server.url, WRITER_KEY, "demo_mcp")
    try:
        mine = list(client.replay(after_seq=4))
    finally:
        client.close()
    assert [type(i) for i in mine] == [mcplog.ReplayEvent, mcplog.Gap, mcplog.ReplayEvent]


def test_an_error_answer_and_a_bad_argument_are_replay_errors(server):
    with pytest.raises(mcplog.ReplayError) as err:
        list(mcplog.replay(server.url, "not-a-key"))
    assert err.value.status == 401
    with pytest.raises(ValueError):
        list(mcplog.replay(server.url, ADMIN_KEY, limit=0))


def test_lines_parse_into_typed_items():
    gap = mcplog._replay.parse_line(b'{"gap":{"after_seq":89,"next_seq":101,"reason":"repair"}}\n')
    assert gap == mcplog.Gap(89, 101, "repair")
    beat = mcplog._replay.parse_line(b'{"heartbeat":1795759503.5,"durable_seq":3}')
    assert beat == mcplog.Heartbeat(1795759503.5, 3)
    assert mcplog._replay.parse_line(b'{"something_new":1}') is None
    with pytest.raises(mcplog.ReplayError) as err:
        mcplog._replay.parse_line(b'{"error":{"code":"shutting_down","message":"m","after_seq":7}}')
    assert (err.value.code, err.value.after_seq) == ("shutting_down", 7)
