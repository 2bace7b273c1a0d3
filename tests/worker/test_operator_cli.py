"""Operator commands: topics, produce, consume, plan show, state inspect/reset — incl. bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from worker.state.store import PartitionStore

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=REPO, capture_output=True, text=True,
                          input=stdin, timeout=120)


def test_plan_show_redacts_secrets():
    out = cli("plan", "show", "examples.sentiment.sentiment_agent:SentimentAnalysisAgent",
              "-r", "local_llm=examples.sentiment.custom_types:local_llm_descriptor")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert {a["name"] for a in plan["actions"]} >= {"process_input", "process_chat_response", "chat_model_action"}
    connection = next(r for r in plan["resources"] if r["name"] == "local_llm")
    assert connection["descriptor"]["arguments"]["api_key"] == "***"
    assert "sk-" not in out.stdout


def test_plan_show_bad_path():
    out = cli("plan", "show", "nope:Nothing")
    assert out.returncode == 2 and "agent: cannot import" in out.stderr


def test_state_inspect_lists_and_shows_keys(tmp_path: Path):
    store = PartitionStore(tmp_path / "app" / "3")
    store.apply({b"user-1": json.dumps({"m": {"v": {"count": 2}}, "p": 41}).encode()}, 7)
    # Left open, as a running worker holds it: inspect reads without RocksDB's lock.
    close_store = store.close
    listed = cli("state", "inspect", "--app-id", "app", "--state-dir", str(tmp_path))
    assert listed.returncode == 0 and listed.stdout.split() == ["user-1"]
    shown = cli("state", "inspect", "--key", "user-1", "--app-id", "app", "--state-dir", str(tmp_path))
    assert shown.returncode == 0
    assert json.loads(shown.stdout) == {"key": "user-1", "partition": 3, "changelog_offset": 7,
                                        "memory": {"count": 2}, "finished_through_offset": 41,
                                        "unfinished_run": None}
    raw = cli("state", "inspect", "--key", "user-1", "--raw", "--app-id", "app", "--state-dir", str(tmp_path))
    assert json.loads(raw.stdout)["state"] == {"m": {"v": {"count": 2}}, "p": 41}
    missing = cli("state", "inspect", "--key", "nobody", "--app-id", "app", "--state-dir", str(tmp_path))
    assert missing.returncode == 1 and "no stored state" in missing.stderr
    no_app = cli("state", "inspect", "--app-id", "other", "--state-dir", str(tmp_path))
    assert no_app.returncode == 2 and "state-dir" in no_app.stderr
    close_store()


def test_state_reset_asks_for_confirmation(tmp_path: Path):
    out = cli("state", "reset", "--app-id", "app", "--state-dir", str(tmp_path), stdin="n\n")
    assert out.returncode == 1


@pytest.mark.integration
def test_topics_produce_consume_reset_round_trip(kafka, tmp_path: Path):
    bs = ["--bootstrap-servers", kafka.bootstrap_servers]
    topic = f"ops-{tmp_path.name[-8:]}".replace("_", "-")
    created = cli("topics", "create", topic, "--partitions", "3", *bs)
    assert created.returncode == 0 and "created (3 partitions)" in created.stdout
    described = cli("topics", "describe", topic, "no-such-topic", *bs)
    assert described.returncode == 1
    assert f"{topic}: 3 partitions" in described.stdout and "no-such-topic: missing" in described.stdout

    lines = "\n".join(json.dumps({"id": str(i), "text": f"t{i}"}) for i in range(5)) + "\n"
    produced = cli("produce", topic, "--key-field", "id", *bs, stdin=lines)
    assert produced.returncode == 0, produced.stderr
    consumed = cli("consume", topic, "--from-beginning", "--max", "5", *bs)
    records = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert sorted(r["key"] for r in records) == ["0", "1", "2", "3", "4"]
    assert all(r["value"]["text"] == f"t{r['key']}" for r in records)

    bad_json = cli("produce", topic, *bs, stdin='{"ok": 1}\nnot json\n')
    assert bad_json.returncode == 2 and "input: line 2 is not JSON" in bad_json.stderr
    no_field = cli("produce", topic, "--key-field", "id", *bs, stdin='{"x": 1}\n')
    assert no_field.returncode == 2 and "key-field: line 1 has no field 'id'" in no_field.stderr
    missing = cli("produce", "no-such-topic", *bs, stdin="{}\n")
    assert missing.returncode == 2 and "topic: topic 'no-such-topic' does not exist" in missing.stderr
    assert cli("consume", "no-such-topic", *bs).returncode == 2

    app = f"resetapp{tmp_path.name[-6:]}"
    cli("topics", "create", f"{app}-state-changelog", "--partitions", "3", "--compact", *bs)
    (tmp_path / app / "0").mkdir(parents=True)
    reset = cli("state", "reset", "--app-id", app, "--state-dir", str(tmp_path), "--yes", *bs)
    assert reset.returncode == 0, reset.stderr
    assert f"{app}-state-changelog" in reset.stdout and not (tmp_path / app).exists()
    assert cli("topics", "describe", f"{app}-state-changelog", *bs).returncode == 1
    deleted = cli("topics", "delete", topic, *bs)
    assert deleted.returncode == 0 and topic in deleted.stdout


@pytest.mark.integration
def test_state_reset_refuses_while_the_group_has_live_members(kafka, tmp_path: Path):
    from confluent_kafka import Consumer

    from tests.kafka_support import consumer_config

    topic = kafka.new_topic("reset-live")
    app = f"live{tmp_path.name[-6:]}".replace("_", "-")
    (tmp_path / app / "0").mkdir(parents=True)
    member = Consumer(consumer_config(kafka.bootstrap_servers, app, client_id="worker-w1"))
    joined: list[object] = []
    member.subscribe([topic], on_assign=lambda c, parts: joined.extend(parts))
    try:
        for _ in range(300):  # bounded: until the group has assigned the partition (a live member)
            member.poll(0.1)
            if joined:
                break
        assert joined
        bs = ["--bootstrap-servers", kafka.bootstrap_servers]
        refused = cli("state", "reset", "--app-id", app, "--state-dir", str(tmp_path), "--yes", *bs)
        assert refused.returncode == 2
        assert refused.stderr.strip() == (f"error: app-id: group {app!r} has 1 live member(s) (worker-w1): "
                                          "stop its workers first (or pass --force)")
        assert (tmp_path / app).exists()  # nothing was deleted
    finally:
        member.close()
    forced = cli("state", "reset", "--app-id", app, "--state-dir", str(tmp_path), "--yes", "--force",
                 "--bootstrap-servers", kafka.bootstrap_servers)
    assert forced.returncode == 0, forced.stderr
    assert not (tmp_path / app).exists()
