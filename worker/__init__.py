"""The Kafka runtime for agentplan agents: consumer groups, RocksDB state, exactly-once commits."""

from worker.config import ProcessingGuarantee, WorkerSettings
from worker.environment import KafkaExecutionEnvironment
from worker.exceptions import BrokerUnavailableError, ConfigurationError, WorkerError
from worker.runtime import Worker

__all__ = ["BrokerUnavailableError", "ConfigurationError", "KafkaExecutionEnvironment", "ProcessingGuarantee",
           "Worker", "WorkerError", "WorkerSettings"]
