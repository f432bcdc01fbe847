"""`daily_etl_schedule`: its cron, timezone and default status come from the environment.

The daemon test (test_schedule_daemon.py) proves the schedule fires; these pin down what it is
configured to do, without a daemon.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from etl_assets import settings
from etl_assets.schedules import daily_etl_schedule

pytestmark = pytest.mark.fast  # pure: no service, no subprocess


@pytest.fixture
def no_schedule_env(monkeypatch):
    monkeypatch.delenv(settings.SCHEDULE_CRON, raising=False)
    monkeypatch.delenv(settings.SCHEDULE_TZ, raising=False)
    return monkeypatch


def _next_ticks(schedule: dg.ScheduleDefinition, after: dt.datetime, count: int) -> list[dt.datetime]:
    ticks = cron_string_iterator(after.timestamp(), schedule.cron_schedule, schedule.execution_timezone)
    return [next(ticks) for _ in range(count)]


def test_defaults_are_daily_at_six_utc_and_running(no_schedule_env):
    schedule = daily_etl_schedule()

    assert schedule.name == "daily_etl_schedule"
    assert schedule.job_name == "daily_etl"
    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.execution_timezone == "UTC"
    # RUNNING by default: a deployed daemon fires it without anyone switching it on in the UI.
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert _next_ticks(schedule, dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC), 2) == [
        dt.datetime(2026, 3, 2, 6, 0, tzinfo=ZoneInfo("UTC")),
        dt.datetime(2026, 3, 3, 6, 0, tzinfo=ZoneInfo("UTC")),
    ]


def test_cron_and_timezone_come_from_the_environment(no_schedule_env):
    no_schedule_env.setenv(settings.SCHEDULE_CRON, "30 2 * * 1-5")
    no_schedule_env.setenv(settings.SCHEDULE_TZ, "Europe/Berlin")

    schedule = daily_etl_schedule()

    assert schedule.cron_schedule == "30 2 * * 1-5"
    assert schedule.execution_timezone == "Europe/Berlin"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert "30 2 * * 1-5" in schedule.description and "Europe/Berlin" in schedule.description


def test_ticks_follow_the_timezone_across_daylight_saving(no_schedule_env):
    no_schedule_env.setenv(settings.SCHEDULE_TZ, "Europe/Berlin")
    schedule = daily_etl_schedule()  # default cron: 06:00 every day, Berlin time

    berlin = ZoneInfo("Europe/Berlin")
    ticks = _next_ticks(schedule, dt.datetime(2026, 3, 28, 12, 0, tzinfo=dt.UTC), 2)

    assert [t.astimezone(berlin).replace(tzinfo=None) for t in ticks] == [
        dt.datetime(2026, 3, 29, 6, 0),
        dt.datetime(2026, 3, 30, 6, 0),
    ]
    # Clocks went forward on 29 March: 06:00 Berlin is 05:00 UTC before, 04:00 UTC after.
    assert [t.astimezone(dt.UTC).hour for t in ticks] == [4, 4]
    assert _next_ticks(schedule, dt.datetime(2026, 3, 27, 12, 0, tzinfo=dt.UTC), 1)[0].astimezone(dt.UTC).hour == 5


def test_blank_values_count_as_unset(no_schedule_env):
    no_schedule_env.setenv(settings.SCHEDULE_CRON, "  ")
    no_schedule_env.setenv(settings.SCHEDULE_TZ, "")

    schedule = daily_etl_schedule()

    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 6 * * *", "UTC")


def test_every_minute_cron_is_accepted(no_schedule_env):
    """What test_schedule_daemon.py uses to make the daemon fire within a minute."""
    no_schedule_env.setenv(settings.SCHEDULE_CRON, "* * * * *")

    schedule = daily_etl_schedule()

    start = dt.datetime(2026, 3, 1, 12, 0, 30, tzinfo=dt.UTC)
    assert _next_ticks(schedule, start, 2) == [
        dt.datetime(2026, 3, 1, 12, 1, tzinfo=ZoneInfo("UTC")),
        dt.datetime(2026, 3, 1, 12, 2, tzinfo=ZoneInfo("UTC")),
    ]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (settings.SCHEDULE_CRON, "every day at six"),
        (settings.SCHEDULE_CRON, "0 6 * *"),
        (settings.SCHEDULE_TZ, "Mars/Olympus_Mons"),
    ],
)
def test_invalid_values_fail_when_the_code_location_loads_naming_them(no_schedule_env, variable, value):
    no_schedule_env.setenv(variable, value)

    with pytest.raises(dg.DagsterInvalidDefinitionError, match=value.replace("*", r"\*")):
        daily_etl_schedule()


def test_a_tick_requests_one_run_of_daily_etl(no_schedule_env):
    schedule = daily_etl_schedule()
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.UTC))

    result = schedule.evaluate_tick(context)

    assert result.skip_message is None
    assert len(result.run_requests) == 1
    assert result.run_requests[0].job_name in (None, "daily_etl")


def test_the_code_location_registers_the_schedule():
    from etl_assets.definitions import defs

    schedule = defs.resolve_schedule_def("daily_etl_schedule")

    assert schedule.job_name == "daily_etl"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
