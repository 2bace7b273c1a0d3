"""The ``agentfleet`` command line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from worker.exceptions import ConfigurationError, WorkerError


def _plain_help_params(params: list[Any]) -> None:
    """Keep typer's internal type labels (``<bool>``, ``<list[str]>``, ``<FileText>``...) out of help.

    Typer ≥ 0.20 prints a type column: a parameter's metavar when it has one, else a label built
    from its Python annotation. Flags take no value, so they get an empty metavar; every other
    option names its value with a metavar of its own (``N``, ``PATH``, ``TOPIC``...), and the name
    column of an argument already shows its metavar, so its type column is left empty.
    """
    for param in params:
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            if param.metavar is None:
                param.metavar = ""
        elif param.metavar is None:
            param.metavar = (param.name or "value").upper()
        if getattr(param, "param_type_name", "") == "argument" and hasattr(param, "display_type_rich"):
            param.display_type_rich = _no_type_label


def _no_type_label(ctx: Any = None) -> None:
    return None


class _Command(TyperCommand):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _plain_help_params(self.get_params(ctx))
        super().format_help(ctx, formatter)


class _Group(TyperGroup):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _plain_help_params(self.get_params(ctx))
        super().format_help(ctx, formatter)


class _App(typer.Typer):
    """A Typer whose commands and groups render help without internal type names."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=_Group, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


app = _App(help="Kafka Agent Fleet: run Flink-Agents-style LLM agents over Kafka.", no_args_is_help=True,
           add_completion=False)

E = "AGENTFLEET_"


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        import confluent_kafka

        typer.echo(f"agentfleet {version('kafka-agent-fleet')} (confluent-kafka {confluent_kafka.version()}, "
                   f"librdkafka {confluent_kafka.libversion()[0]})")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """Kafka Agent Fleet: run Flink-Agents-style LLM agents over Kafka."""


#: Libraries that log every request at INFO: one line per model call floods the log and costs CPU.
_PER_REQUEST_LOGGERS = ("httpx", "httpx2")


def _setup_logging(level: str) -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if numeric > logging.DEBUG:
        for name in _PER_REQUEST_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


#: Settings whose default is computed at start-up, described in words.
_COMPUTED_DEFAULTS = {"instance_id": "this host's name"}


def _setting_help(name: str) -> str:
    """A worker flag's help is its setting's description: one text for --help and the reference,
    followed by what a user needs to set it: required or its default, and its environment variable.

    No ``envvar`` on these flags: ``WorkerSettings.load`` reads ``AGENTFLEET_*`` itself, below the
    flags and above the config file, which is the documented precedence.
    """
    from pydantic_core import PydanticUndefined

    from worker.config import WorkerSettings

    field = WorkerSettings.model_fields[name]
    text = field.description or name.replace("_", " ")
    # Parentheses, not brackets: typer renders help as rich markup, where [required] is a tag.
    if field.is_required():
        extra = "required"
    elif name in _COMPUTED_DEFAULTS:
        extra = f"default {_COMPUTED_DEFAULTS[name]}"
    elif isinstance(field.default, Path):
        extra = f"default {field.default if field.default.is_absolute() else './' + str(field.default)}"
    elif field.default not in (None, PydanticUndefined):
        extra = f"default {getattr(field.default, 'value', field.default)}"
    else:
        extra = "optional"
    return f"{text} ({extra}; env {E}{name.upper()})"


def _setting_option(name: str, metavar: str | None = None) -> Any:
    """A worker flag for setting ``name``; its metavar says what to write (N, PATH, MODULE:CLASS...)."""
    from worker.config import WorkerSettings

    if metavar is None:
        annotation = str(WorkerSettings.model_fields[name].annotation)
        metavar = ("N" if "int" in annotation else "SECONDS" if name.endswith("_s") else "PATH" if "Path" in annotation
                   else "TEXT")
    return typer.Option(None, metavar=metavar, help=_setting_help(name))


def _parse_properties(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        if "=" not in item:
            raise ConfigurationError("kafka-property", f"expected key=value, got {item!r}")
        key, _, value = item.partition("=")
        out[key.strip()] = value
    return out


def _parse_resources(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, target = item.partition("=")
        if not sep or ":" not in target:
            raise ConfigurationError("resource", f"expected NAME=MODULE:ATTR, got {item!r}")
        out[name.strip()] = target.strip()
    return out


@app.command()
def worker(
    agent: str | None = _setting_option("agent", "MODULE:CLASS"),
    input_topic: str | None = _setting_option("input_topic", "TOPIC"),
    output_topic: str | None = _setting_option("output_topic", "TOPIC"),
    bootstrap_servers: str | None = _setting_option("bootstrap_servers", "HOST:PORT,..."),
    app_id: str | None = _setting_option("app_id", "ID"),
    input_model: str | None = _setting_option("input_model", "MODULE:CLASS"),
    key_field: str | None = _setting_option("key_field", "FIELD"),
    state_dir: Path | None = _setting_option("state_dir"),
    instance_id: str | None = _setting_option("instance_id", "ID"),
    max_inflight: int | None = _setting_option("max_inflight"),
    commit_interval_ms: int | None = _setting_option("commit_interval_ms"),
    processing_guarantee: str | None = _setting_option("processing_guarantee", "exactly-once|at-least-once"),
    metrics_port: int | None = _setting_option("metrics_port"),
    metrics_host: str | None = _setting_option("metrics_host", "HOST"),
    dlq_topic: str | None = _setting_option("dlq_topic", "TOPIC"),
    replication_factor: int | None = _setting_option("replication_factor"),
    group_protocol: str | None = _setting_option("group_protocol", "classic|consumer"),
    agent_config: Path | None = _setting_option("agent_config"),
    approvals: bool | None = typer.Option(None, "--approvals", help=_setting_help("approvals")),
    max_record_bytes: int | None = _setting_option("max_record_bytes"),
    transaction_timeout_ms: int | None = _setting_option("transaction_timeout_ms"),
    session_timeout_ms: int | None = _setting_option("session_timeout_ms"),
    shutdown_grace_s: float | None = _setting_option("shutdown_grace_s"),
    startup_timeout_s: float | None = _setting_option("startup_timeout_s"),
    broker_unreachable_timeout_s: float | None = _setting_option("broker_unreachable_timeout_s"),
    loop_stall_timeout_s: float | None = _setting_option("loop_stall_timeout_s"),
    event_loop: str | None = _setting_option("event_loop", "auto|uvloop|asyncio"),
    resource: list[str] = typer.Option([], "--resource", "-r", metavar="NAME=MODULE:ATTR",
                                       help=f"environment resource, like env.add_resource (repeatable; env "
                                            f"{E}RESOURCES=NAME=MODULE:ATTR,...)"),
    kafka_property: list[str] = typer.Option([], "--kafka-property", "-X", metavar="KEY=VALUE",
                                             help=f"extra librdkafka property (repeatable; env "
                                                  f"{E}KAFKA_<PROPERTY>, _ for .)"),
    config: Path | None = typer.Option(None, metavar="PATH", help="YAML file with any of these settings",
                                          envvar=E + "CONFIG"),
    log_level: str = typer.Option("INFO", metavar="LEVEL", help="log level", envvar=E + "LOG_LEVEL"),
) -> None:
    """Join the consumer group and run the agent over the input topic until SIGTERM."""
    _setup_logging(log_level)
    from worker.config import WorkerSettings
    from worker.runtime import Worker

    try:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # agents are usually modules of the user's project
        settings = WorkerSettings.load(
            config, agent=agent, input_topic=input_topic, output_topic=output_topic,
            bootstrap_servers=bootstrap_servers, app_id=app_id, input_model=input_model, key_field=key_field,
            state_dir=state_dir, instance_id=instance_id, max_inflight=max_inflight,
            commit_interval_ms=commit_interval_ms, processing_guarantee=processing_guarantee,
            replication_factor=replication_factor,
            metrics_port=metrics_port, metrics_host=metrics_host, dlq_topic=dlq_topic, group_protocol=group_protocol,
            agent_config=agent_config, approvals=approvals, max_record_bytes=max_record_bytes,
            transaction_timeout_ms=transaction_timeout_ms,
            session_timeout_ms=session_timeout_ms, shutdown_grace_s=shutdown_grace_s,
            startup_timeout_s=startup_timeout_s, broker_unreachable_timeout_s=broker_unreachable_timeout_s,
            loop_stall_timeout_s=loop_stall_timeout_s, event_loop=event_loop,
            kafka=_parse_properties(kafka_property), resources=_parse_resources(resource))
        code = Worker(settings).run()
    except WorkerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2 if isinstance(exc, ConfigurationError) else 1) from None
    raise typer.Exit(code)


_ENGINE_HELP = ("tansu: the embedded broker, nothing to install; "
                "kafka: Apache Kafka (needs Java 17+ and Maven; jars fetched from Maven Central once)")


def _engine(value: str) -> str:
    engine = value.strip().lower()
    if engine not in ("tansu", "kafka"):
        raise typer.BadParameter(f"expected tansu or kafka, got {value!r}", param_hint="--engine")
    return engine


@app.command()
def demo(count: int | None = typer.Option(None, metavar="N",
                                             help="generate N records (default: the 7 reviews of "
                                                  "examples/sentiment/resources/input.txt)"),
         workers: int = typer.Option(2, metavar="N", help="worker processes to start"),
         timeout_s: float = typer.Option(120.0, metavar="SECONDS", help="give up waiting for results after this long"),
         engine: str = typer.Option("tansu", metavar="tansu|kafka", callback=_engine, help=_ENGINE_HELP)) -> None:
    """Run the sentiment pipeline on a broker it starts, with 2 workers; print results; clean up."""
    _setup_logging("WARNING")
    from worker.demo import demo_records, run_demo

    expected = len(demo_records(count))
    try:
        received = run_demo(count, workers, timeout_s, echo=typer.echo, engine=engine)
    except WorkerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(0 if received == expected else 1)


@app.command()
def broker(port: int = typer.Option(9092, metavar="PORT",
                                    help="client port on 127.0.0.1 (3 nodes: this port and the next two)"),
           engine: str = typer.Option("tansu", metavar="tansu|kafka", callback=_engine, help=_ENGINE_HELP),
           nodes: int = typer.Option(1, metavar="1|3", help="kafka engine: 1, or 3 for a replicated cluster"),
           data_dir: Path | None = typer.Option(None, metavar="PATH",
                                                   help="kafka engine: keep data here (default: a temp dir removed "
                                                        "on exit)")) -> None:
    """Run a broker in the foreground until Ctrl-C: Tansu (embedded) or Apache Kafka (KRaft)."""
    try:
        if engine == "kafka":
            if nodes not in (1, 3):
                raise typer.BadParameter(f"expected 1 or 3, got {nodes}", param_hint="--nodes")
            _setup_logging("INFO")
            from worker.kafka.apache import run_foreground as run_kafka

            run_kafka(port, nodes=nodes, data_dir=data_dir)
        else:
            if nodes != 1 or data_dir is not None:
                raise typer.BadParameter("--nodes and --data-dir need --engine kafka (Tansu keeps one "
                                         "in-memory node)")
            from worker.kafka.embedded import run_foreground

            run_foreground(port)
    except WorkerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("llm-stub")
def llm_stub(port: int = typer.Option(8000, metavar="PORT", help="port to listen on"),
             host: str = typer.Option("127.0.0.1", metavar="HOST", help="bind address (0.0.0.0 inside a container)"),
             latency_ms: float = typer.Option(0.0, min=0, metavar="MS", help="added latency per request"),
             error_rate: float = typer.Option(0.0, min=0, max=1, metavar="FRACTION",
                                              help="fraction of requests answered 500/503"),
             rate_limit: float = typer.Option(0.0, min=0, metavar="PER_S",
                                              help="requests/s answered; above it 429 with Retry-After (0: none)")
             ) -> None:
    """Run the OpenAI-compatible stub model server in the foreground."""
    from agentplan.testing.llm_stub import main

    raise typer.Exit(main(["--host", host, "--port", str(port), "--latency-ms", str(latency_ms),
                           "--error-rate", str(error_rate), "--rate-limit", str(rate_limit)]))


topics_app = _App(help="Create, describe and delete topics.", no_args_is_help=True)
state_app = _App(help="Inspect per-key state (also while workers run) or reset it (workers stopped).",
                        no_args_is_help=True)
plan_app = _App(help="Show compiled agent plans.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(state_app, name="state")
app.add_typer(plan_app, name="plan")
groups_app = _App(help="Consumer groups: members, assignment, committed offsets and lag.", no_args_is_help=True)
app.add_typer(groups_app, name="groups")
approvals_app = _App(help="Parked runs waiting for a decision: list them, approve or reject one.",
                     no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")

BOOTSTRAP = typer.Option("127.0.0.1:9092", "--bootstrap-servers", envvar=E + "BOOTSTRAP_SERVERS",
                         metavar="HOST:PORT,...", help="Kafka bootstrap servers")
PROPS = typer.Option([], "--kafka-property", "-X", metavar="KEY=VALUE",
                     help="extra librdkafka property (repeatable)")


def _admin(bootstrap_servers: str, kafka_property: list[str]) -> Any:
    from worker.kafka.admin import TopicAdmin

    admin = TopicAdmin(bootstrap_servers, _parse_properties(kafka_property))
    admin.check_reachable()
    return admin


@groups_app.command("describe")
def groups_describe(group: str = typer.Argument(..., metavar="APP_ID", help="the group: a worker's --app-id"),
                    as_json: bool = typer.Option(False, "--json", help="print JSON"),
                    bootstrap_servers: str = BOOTSTRAP, kafka_property: list[str] = PROPS) -> None:
    """Members and their partitions, committed offset and lag per partition."""
    import json

    from worker.cluster_info import describe_group

    try:
        info = describe_group(_admin(bootstrap_servers, kafka_property), group)
    except WorkerError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(info))
        return
    typer.echo(f"group {group}: {info['state']}, protocol {info['protocol']}, {len(info['members'])} members, "
               f"lag {info['total_lag']}")
    for m in info["members"]:
        typer.echo(f"  member {m['client']} ({m['host']}): {', '.join(m['partitions']) or 'no partitions'}")
    for o in info["offsets"]:
        typer.echo(f"  {o['topic']}[{o['partition']}]: committed {o['committed']}, end {o['end']}, lag {o['lag']}")


APP_ID = typer.Option("agentfleet", "--app-id", envvar=E + "APP_ID", metavar="ID", help="the workers' --app-id")


@approvals_app.command("list")
def approvals_list(app_id: str = APP_ID, bootstrap_servers: str = BOOTSTRAP,
                   kafka_property: list[str] = PROPS) -> None:
    """Pending requests (no decision yet, deadline ahead) as JSON lines, oldest first."""
    import json

    from worker.approval_commands import pending_requests

    try:
        for request in pending_requests(bootstrap_servers, app_id, _parse_properties(kafka_property)):
            typer.echo(json.dumps(request))
    except WorkerError as exc:
        _fail(exc)


def _decide(request_id: str, approved: bool, app_id: str, by: str, comment: str, bootstrap_servers: str,
            kafka_property: list[str]) -> None:
    from worker.approval_commands import decide

    try:
        request = decide(bootstrap_servers, app_id, request_id, approved, _parse_properties(kafka_property), by,
                         comment)
    except WorkerError as exc:
        _fail(exc)
    typer.echo(f"{'approved' if approved else 'rejected'} {request_id} (key {request['key']!r})")


BY = typer.Option("", "--by", metavar="NAME", help="who decided (shown to the agent as decided_by)")
COMMENT = typer.Option("", "--comment", metavar="TEXT", help="a note for the agent")


@approvals_app.command("approve")
def approvals_approve(request_id: str = typer.Argument(..., metavar="REQUEST_ID", help="from approvals list"),
                      app_id: str = APP_ID, by: str = BY, comment: str = COMMENT,
                      bootstrap_servers: str = BOOTSTRAP, kafka_property: list[str] = PROPS) -> None:
    """Approve a pending request: its run resumes with an ApprovalDecisionEvent (approved true)."""
    _decide(request_id, True, app_id, by, comment, bootstrap_servers, kafka_property)


@approvals_app.command("reject")
def approvals_reject(request_id: str = typer.Argument(..., metavar="REQUEST_ID", help="from approvals list"),
                     app_id: str = APP_ID, by: str = BY, comment: str = COMMENT,
                     bootstrap_servers: str = BOOTSTRAP, kafka_property: list[str] = PROPS) -> None:
    """Reject a pending request: its run resumes with an ApprovalDecisionEvent (approved false)."""
    _decide(request_id, False, app_id, by, comment, bootstrap_servers, kafka_property)


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


@plan_app.command("show")
def plan_show(agent: str = typer.Argument(..., metavar="MODULE:CLASS", help="the agent class"),
              resource: list[str] = typer.Option([], "--resource", "-r", metavar="NAME=MODULE:ATTR",
                                                 help="environment resource (repeatable)")) -> None:
    """Print the compiled AgentPlan as JSON (API keys and passwords redacted)."""
    from worker.operator_tools import plan_json

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        typer.echo(plan_json(agent, _parse_resources(resource)))
    except WorkerError as exc:
        _fail(exc)


@topics_app.command("create")
def topics_create(names: list[str] = typer.Argument(..., metavar="TOPIC...", help="topic names"),
                  partitions: int = typer.Option(12, min=1, metavar="N", help="partition count"),
                  compact: bool = typer.Option(False, "--compact", help="cleanup.policy=compact (default: delete)"),
                  bootstrap_servers: str = BOOTSTRAP, kafka_property: list[str] = PROPS) -> None:
    """Create topics (no-op for existing ones with the same partition count)."""
    from worker.kafka.admin import TopicAdmin

    try:
        admin = TopicAdmin(bootstrap_servers, _parse_properties(kafka_property))
        admin.check_reachable()
        for name in names:
            created = admin.create_topic(name, partitions, {"cleanup.policy": "compact"} if compact else None)
            typer.echo(f"{name}: {'created' if created else 'exists'} ({partitions} partitions)")
    except WorkerError as exc:
        _fail(exc)


@topics_app.command("list")
def topics_list(internal: bool = typer.Option(False, "--internal", help="include __consumer_offsets and others"),
                bootstrap_servers: str = BOOTSTRAP, kafka_property: list[str] = PROPS) -> None:
    """List topics with their partition counts."""
    from worker.cluster_info import list_topics

    try:
        for topic in list_topics(_admin(bootstrap_servers, kafka_property), internal):
            typer.echo(f"{topic['topic']}: {topic['partitions']} partitions")
    except WorkerError as exc:
        _fail(exc)


@topics_app.command("describe")
def topics_describe(names: list[str] = typer.Argument(..., metavar="TOPIC...", help="topic names"),
                    as_json: bool = typer.Option(False, "--json", help="one JSON object per topic"),
                    bootstrap_servers: str = BOOTSTRAP, kafka_property: list[str] = PROPS) -> None:
    """Partitions (leader, replicas, ISR, offsets) and configs set on each topic; exit 1 when one is missing."""
    import json

    from worker.cluster_info import describe_topic

    missing = False
    try:
        admin = _admin(bootstrap_servers, kafka_property)
        for name in names:
            info = describe_topic(admin, name)
            missing |= info is None
            if info is None:
                typer.echo(f"{name}: missing")
            elif as_json:
                typer.echo(json.dumps(info))
            else:
                configs = ", ".join(f"{k}={v}" for k, v in info["configs"].items()) or "defaults"
                typer.echo(f"{name}: {len(info['partitions'])} partitions; configs: {configs}")
                for p in info["partitions"]:
                    typer.echo(f"  partition {p['partition']}: leader {p['leader']}, replicas {p['replicas']}, "
                               f"isr {p['isr']}, offsets {p['start_offset']}-{p['end_offset']}")
    except WorkerError as exc:
        _fail(exc)
    raise typer.Exit(1 if missing else 0)


@topics_app.command("delete")
def topics_delete(names: list[str] = typer.Argument(..., metavar="TOPIC...", help="topic names"),
                  bootstrap_servers: str = BOOTSTRAP, kafka_property: list[str] = PROPS) -> None:
    """Delete topics (unknown ones are ignored)."""
    from worker.kafka.admin import TopicAdmin

    try:
        admin = TopicAdmin(bootstrap_servers, _parse_properties(kafka_property))
        admin.check_reachable()
        typer.echo(f"deleted: {admin.delete_topics(names) or 'none'}")
    except WorkerError as exc:
        _fail(exc)


@app.command()
def produce(topic: str = typer.Argument(..., metavar="TOPIC", help="target topic"),
            file: typer.FileText | None = typer.Option(None, "--file", "-f", metavar="PATH",
                                                          help="JSON lines (default: stdin)"),
            key_field: str | None = typer.Option(None, metavar="FIELD",
                                                    help="JSON field whose value becomes the record key"),
            strict: bool = typer.Option(False, "--strict", help="refuse to send keyless records"),
            from_line: int = typer.Option(1, min=1, metavar="N", help="skip the lines before line N (resume)"),
            chunk: int = typer.Option(10_000, min=1, metavar="N", help="lines per transaction"),
            bootstrap_servers: str = BOOTSTRAP, kafka_property: list[str] = PROPS) -> None:
    """Produce JSON lines: every line is checked first, then sent in transactions; nothing is half-sent."""
    from worker.line_producer import parse_lines, produce_lines
    from worker.progress import progress

    try:
        if key_field is None:
            message = ("key-field: records will have no key; a worker dead-letters keyless records as null-key "
                       "unless it runs with --key-field; pass --key-field FIELD to key them")
            if strict:
                raise ConfigurationError("key-field", message.split(": ", 1)[1])
            typer.echo(f"warning: {message}", err=True)
        records = parse_lines(file or sys.stdin, key_field, from_line)
        with progress(f"producing to {topic}", total=len(records)) as advance:
            summary = produce_lines(bootstrap_servers, topic, records, _parse_properties(kafka_property), chunk,
                                    advance, source=None if file is None else file.name)
    except WorkerError as exc:
        _fail(exc)
    if summary.records:
        typer.echo(f"produced {summary.records} records to {topic} (lines {summary.first_line}-{summary.last_line}, "
                   "committed)", err=True)
    else:
        typer.echo(f"produced 0 records to {topic} (no lines to send)", err=True)


@app.command()
def consume(topic: str = typer.Argument(..., metavar="TOPIC", help="topic to read (committed records only)"),
            offset: str = typer.Option("latest", metavar="earliest|latest|N|-N",
                                       help="where each partition starts: -N is N records before its end"),
            from_beginning: bool = typer.Option(False, "--from-beginning", help="same as --offset earliest"),
            partition: list[int] = typer.Option([], "--partition", "-p", metavar="P",
                                                help="read only this partition (repeatable; default all)"),
            key: str | None = typer.Option(None, metavar="KEY", help="print only records with this key"),
            max_records: int | None = typer.Option(None, "--max", min=1, metavar="N", help="stop after N records"),
            follow: bool = typer.Option(False, "--follow", "-F",
                                        help="keep waiting for new records (until --max or Ctrl-C)"),
            fmt: str = typer.Option("json", "--format", metavar="json|raw|base64|TEMPLATE",
                                    help="TEMPLATE like kcat's: %k key, %v value, %h headers, %p partition, "
                                         "%o offset, %T timestamp, %t topic"),
            bootstrap_servers: str = BOOTSTRAP, kafka_property: list[str] = PROPS) -> None:
    """Print committed records, one per line; stop at the end of the partitions unless --follow."""
    from worker.topic_reader import (
        ReadPlan,
        check_format,
        parse_offset,
        read_topic,
        render,
    )

    out = sys.stdout.buffer
    try:
        plan = ReadPlan(topic, "earliest" if from_beginning else parse_offset(offset), tuple(partition), key,
                        max_records, follow)
        fmt = check_format(fmt)
        for msg in read_topic(bootstrap_servers, plan, _parse_properties(kafka_property)):
            out.write(render(msg, fmt) + b"\n")
            out.flush()
    except WorkerError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command()
def trace(key: str = typer.Argument(..., metavar="KEY", help="the record key whose runs to show"),
          app_id: str = typer.Option("agentfleet", envvar=E + "APP_ID", metavar="ID",
                                     help="the workers' --app-id: reads <app-id>-events"),
          file: Path | None = typer.Option(None, metavar="PATH", help="read a local runner's JSON-lines event "
                                                                      "log instead of Kafka"),
          last: int | None = typer.Option(None, "--last", min=1, metavar="N", help="only the last N runs"),
          bootstrap_servers: str = BOOTSTRAP, kafka_property: list[str] = PROPS) -> None:
    """Show a key's runs from the event log as a tree: run -> actions -> model and tool calls."""
    from rich.console import Console

    from worker.trace_cli import file_records, group_runs, kafka_records, render_runs

    try:
        records = (file_records(file, key) if file is not None else
                   kafka_records(bootstrap_servers, f"{app_id}-events", key, _parse_properties(kafka_property)))
        runs = group_runs(records)
    except WorkerError as exc:
        _fail(exc)
    if not runs:
        typer.echo(f"error: no event-log records for key {key!r} (is event-log.level set for the agent?)", err=True)
        raise typer.Exit(1)
    # Piped output is not cut at 80 columns: a tree line is read whole.
    Console(width=None if sys.stdout.isatty() else 400).print(render_runs(key, runs[-last:] if last else runs))


@state_app.command("inspect")
def state_inspect(key: str | None = typer.Option(None, metavar="KEY", help="the key to show; omit to list keys"),
                  app_id: str = typer.Option("agentfleet", envvar=E + "APP_ID", metavar="ID",
                                             help="the workers' --app-id"),
                  state_dir: Path = typer.Option("./state", envvar=E + "STATE_DIR", metavar="PATH",
                                                 help="the workers' --state-dir"),
                  raw: bool = typer.Option(False, "--raw", help="print the stored encoding as it is (internal "
                                                                "field names, may change between versions)")
                  ) -> None:
    """Show one key's stored state (memory, progress, unfinished run) or list stored keys."""
    import json

    from worker.operator_tools import inspect_key, list_keys

    try:
        if key is None:
            for name in list_keys(state_dir, app_id):
                typer.echo(name)
            return
        found = inspect_key(state_dir, app_id, key, raw=raw)
    except WorkerError as exc:
        _fail(exc)
    if found is None:
        typer.echo(f"error: key {key!r} has no stored state", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(found, indent=2, ensure_ascii=False))


@state_app.command("reset")
def state_reset(app_id: str = typer.Option(..., envvar=E + "APP_ID", metavar="ID",
                                           help="the workers' --app-id: the application to reset"),
                state_dir: Path = typer.Option("./state", envvar=E + "STATE_DIR", metavar="PATH",
                                               help="the workers' --state-dir"),
                yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
                force: bool = typer.Option(False, "--force", help="reset even while the group has live members"),
                bootstrap_servers: str = BOOTSTRAP, kafka_property: list[str] = PROPS) -> None:
    """Delete the app's changelog, repartition topic, group offsets and local stores (workers stopped)."""
    from worker.operator_tools import reset_app

    if not yes and not typer.confirm(f"Reset all state of app {app_id!r}? Inputs will be reprocessed"):
        raise typer.Exit(1)
    try:
        reset_app(bootstrap_servers, app_id, state_dir, _parse_properties(kafka_property), typer.echo, force)
    except WorkerError as exc:
        _fail(exc)


kb_app = _App(help="Knowledge bases: fill an agent's vector store for retrieval (RAG).", no_args_is_help=True)
app.add_typer(kb_app, name="kb")


@kb_app.command("load")
def kb_load(collection: str = typer.Argument(..., metavar="COLLECTION", help="the collection to fill"),
            files: list[Path] = typer.Argument(..., metavar="FILE...",
                                               help="JSON lines (.jsonl: content, id, metadata) or text files"),
            agent: str = typer.Option(..., "--agent", envvar=E + "AGENT", metavar="MODULE:CLASS",
                                      help="the agent that declares the vector store"),
            vector_store: str = typer.Option(..., "--vector-store", metavar="NAME",
                                             help="the agent's vector store resource"),
            resource: list[str] = typer.Option([], "--resource", "-r", metavar="NAME=MODULE:ATTR",
                                               help="environment resource (repeatable)"),
            agent_config: Path | None = typer.Option(None, "--agent-config", envvar=E + "AGENT_CONFIG",
                                                     metavar="PATH", help="YAML file of AgentConfiguration settings"),
            batch_size: int = typer.Option(64, min=1, metavar="N", help="documents per embedding call")) -> None:
    """Embed documents with the store's embedding model and add them; loading again replaces, never duplicates."""
    from agentplan import AgentPlanError
    from worker.knowledge_base import load, open_store, read_documents
    from worker.progress import progress

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        docs = read_documents(files)
        store = open_store(agent, vector_store, _parse_resources(resource), agent_config)
        try:
            with progress(f"loading {collection}", total=len(docs)) as advance:
                count = load(store, collection, docs, batch_size, advance)
        finally:
            store.close()
    except (WorkerError, AgentPlanError) as exc:  # model unreachable, bad resource: one line
        _fail(exc)
    typer.echo(f"loaded {count} documents into {collection} ({vector_store})", err=True)


if __name__ == "__main__":
    app()
