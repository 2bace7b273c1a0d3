"""``python -m bench.limits``'s arithmetic: when the endpoint's rate settled, from the stub's samples."""

from __future__ import annotations

from bench.limits import settle_time, worker_figures


def test_settled_from_the_first_second_after_which_every_5s_average_is_within_10_percent() -> None:
    answered, samples = 0, []
    per_second = [120, 10, 30, 50, 50, 48, 52, 50, 50, 50, 50, 50, 49, 51, 50, 50, 20]  # burst, dip, steady, tail
    for t, rate in enumerate(per_second):
        samples.append((float(t), answered, 0))
        answered += rate
    settled, averages = settle_time(samples, 50.0, total=answered)
    assert settled == 7.0  # seconds 2-6 average 46/s: the first window within 10% for good
    assert all(45 <= a <= 55 for a in averages[3:])
    flooded = [(float(t), 60 * t, 0) for t in range(12)]  # 60/s against 50/s: never within 10%
    assert settle_time(flooded, 50.0, total=10_000)[0] is None


def test_worker_figures_sum_the_series_of_a_metrics_page() -> None:
    page = "\n".join([
        "# TYPE agentfleet_llm_concurrency_limit gauge",
        'agentfleet_llm_concurrency_limit{endpoint="http://127.0.0.1:1/v1"} 7.0',
        'agentfleet_llm_throttled_seconds_total{endpoint="http://127.0.0.1:1/v1"} 12.5',
        'agentfleet_dlq_records_total{reason="run-failed"} 2.0',
        'agentfleet_transient_retries_total{kind="rate_limit"} 30.0',
        'agentfleet_transient_retries_total{kind="timeout"} 1.0',
    ])
    assert worker_figures(page) == {"limit": 7.0, "throttled_s": 12.5, "dlq": 2.0, "retries": 31.0}
