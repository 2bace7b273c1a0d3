"""Authorization errors become one line naming the missing ACL (the broker-backed test is test_sasl_acls.py)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from worker.checkpoint.producer import FatalCommitError
from worker.config import WorkerSettings
from worker.exceptions import ConfigurationError, KafkaAuthorizationError
from worker.kafka.acls import TOPIC, Acl, authorization_error, denied, principal

SETTINGS = WorkerSettings.load(env={}, agent="a:B", input_topic="in", output_topic="out", app_id="app",
                               instance_id="w1", kafka={"sasl.username": "svc", "sasl.password": "pw-canary"})


@pytest.mark.parametrize("code,expected", [
    (KafkaError.TOPIC_AUTHORIZATION_FAILED, "user svc may not READ topic in (TOPIC_AUTHORIZATION_FAILED)"),
    (KafkaError.GROUP_AUTHORIZATION_FAILED, "user svc may not READ group app (GROUP_AUTHORIZATION_FAILED)"),
    (KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
     "user svc may not WRITE transactional id app-w1 (TRANSACTIONAL_ID_AUTHORIZATION_FAILED)"),
    (KafkaError.CLUSTER_AUTHORIZATION_FAILED,
     "user svc may not IDEMPOTENT_WRITE cluster kafka-cluster (CLUSTER_AUTHORIZATION_FAILED)"),
])
def test_each_authorization_code_names_its_acl(code: int, expected: str):
    error = authorization_error(KafkaError(code), SETTINGS)
    assert isinstance(error, KafkaAuthorizationError) and isinstance(error, ConfigurationError)  # exit code 2
    assert str(error) == f"kafka ACL: {expected}"
    assert "pw-canary" not in str(error)


def test_the_cause_of_a_commit_error_is_classified_and_other_errors_are_not():
    try:
        try:
            raise KafkaException(KafkaError(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, fatal=True))
        except KafkaException as exc:
            raise FatalCommitError("init_transactions failed") from exc
    except FatalCommitError as wrapped:
        assert "transactional id app-w1" in str(authorization_error(wrapped, SETTINGS))
    assert authorization_error(KafkaError(KafkaError._TIMED_OUT), SETTINGS) is None
    assert authorization_error(FatalCommitError("no cause"), SETTINGS) is None
    assert "topic out" in str(authorization_error(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), SETTINGS,
                                                  topic="out"))


def test_several_missing_acls_share_one_line_grouped_by_resource():
    error = denied(principal({}), [Acl(TOPIC, "c", "READ"), Acl(TOPIC, "c", "WRITE"), Acl("group", "g", "READ")])
    assert str(error) == ("kafka ACL: the worker's principal may not READ, WRITE topic c (TOPIC_AUTHORIZATION_FAILED); "
                          "may not READ group g (GROUP_AUTHORIZATION_FAILED)")
    assert "\n" not in str(error)
