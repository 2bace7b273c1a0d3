"""How the benchmark starts its broker and paces its input (no broker is started here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.broker import JIT_MODES, broker_info, start_broker
from bench.cluster import paced_linger_ms
from worker.kafka.apache import ApacheKafka


def test_bench_brokers_compile_with_c1_only_unless_asked_and_results_say_so() -> None:
    default = broker_info("kafka")
    assert default["jvm_options"] == ["-XX:TieredStopAtLevel=1"]
    assert "C1-only JIT" in default["description"]
    tiered = broker_info("kafka", jit="tiered")
    assert tiered["jvm_options"] == [] and "tiered JIT" in tiered["description"]
    assert broker_info("tansu")["jvm_options"] == []


def test_an_unknown_jit_mode_is_refused_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="broker JIT must be one of .*'c1'.*'tiered'.*got 'c2'"):
        start_broker("kafka", jit="c2")


def test_jvm_options_reach_the_broker_command_and_the_jvm_accepts_them() -> None:
    cluster = ApacheKafka(jvm_options=JIT_MODES["c1"])
    cluster._libs = Path("/libs")  # set by start(); only the command line is looked at here
    command = cluster._java_command("java", "kafka.Kafka", "server.properties")
    assert command.index("-XX:TieredStopAtLevel=1") < command.index("kafka.Kafka")
    java = shutil.which("java")
    if java is None:
        pytest.skip("no java on PATH")
    flags = subprocess.run([java, *JIT_MODES["c1"], "-XX:+PrintFlagsFinal", "-version"], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    assert any(line.split()[1:4] == ["TieredStopAtLevel", "=", "1"] for line in flags.splitlines()
               if "TieredStopAtLevel" in line)


def test_paced_input_lingers_only_where_a_batch_holds_more_than_one_record() -> None:
    assert paced_linger_ms(10) == 0  # S7: a linger would only delay each record
    assert paced_linger_ms(64) == 0 and paced_linger_ms(200) == 0
    assert paced_linger_ms(320) == 5 and paced_linger_ms(1995) == 5  # S3 at 200 ms

