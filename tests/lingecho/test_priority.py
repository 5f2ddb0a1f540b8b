"""Engine threads run below the socket loops' priority (lingecho.priority)."""

from __future__ import annotations

import threading

from lingecho.priority import current_thread_nice, lower_current_thread_priority
from media_pipeline.executor import BoundedExecutor


async def test_engine_threads_run_at_a_lower_priority_than_the_loop(settings):
    settings.ENGINE_THREAD_NICE = 7
    loop_nice = current_thread_nice()
    with BoundedExecutor("test-nice", max_workers=1, max_queue=0) as pool:
        assert await pool.run(current_thread_nice) == min(19, loop_nice + 7)
    assert current_thread_nice() == loop_nice  # the loop's own thread is untouched


def test_threads_started_from_an_engine_thread_inherit_it(settings):
    """Native pools (CTranslate2, onnxruntime) start their threads from the engine thread."""
    settings.ENGINE_THREAD_NICE = 5
    seen: dict[str, int] = {}

    def engine() -> None:
        lower_current_thread_priority()
        lower_current_thread_priority()  # once per thread, not cumulative
        seen["engine"] = current_thread_nice()
        child = threading.Thread(target=lambda: seen.setdefault("child", current_thread_nice()))
        child.start()
        child.join()

    base = current_thread_nice()
    worker = threading.Thread(target=engine)
    worker.start()
    worker.join()
    assert seen == {"engine": min(19, base + 5), "child": min(19, base + 5)}


def test_zero_turns_it_off(settings):
    settings.ENGINE_THREAD_NICE = 0
    base = current_thread_nice()
    with BoundedExecutor("test-nice-off", max_workers=1, max_queue=0) as pool:
        assert pool.submit(current_thread_nice).result() == base


def test_after_call_jobs_run_below_the_live_engines(settings):
    """The embedded server's after-call thread: a call that has ended waits for the ones still talking."""
    from roleplay import tasks

    settings.ENGINE_THREAD_NICE, settings.AFTER_CALL_THREAD_NICE = 10, 19
    base = current_thread_nice()
    after_call = tasks._background.submit(current_thread_nice).result(timeout=10)  # noqa: SLF001
    with BoundedExecutor("test-nice-engine", max_workers=1, max_queue=0) as pool:
        engine = pool.submit(current_thread_nice).result()
    assert engine == min(19, base + 10) < after_call == min(19, base + 19)
