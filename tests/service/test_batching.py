"""The micro-batcher: requests waiting together are answered together, each gets its own answer, a failing
request fails alone, a batch keeps to its limit of tasks, and requests waiting when the worker stops learn it."""

from __future__ import annotations

import asyncio

from scoutless.serving.batching import MicroBatcher


class Recorder:
    """answer_many that doubles every task and records the batches it was given; a task of -1 fails."""

    def __init__(self):
        self.batches: list[list[list[int]]] = []

    def __call__(self, requests: list[list[int]]) -> list[list[int]]:
        self.batches.append(requests)
        if any(-1 in request for request in requests):
            raise ValueError("a task of -1")
        return [[2 * task for task in request] for request in requests]


def sent_together(batcher: MicroBatcher, requests: list[list[int]]) -> list:
    """Every request sent in the same turn of the event loop (as requests read from sockets at once are)."""
    async def main():
        return await asyncio.gather(*(batcher.answer(request) for request in requests), return_exceptions=True)

    return asyncio.run(main())


def test_requests_waiting_together_are_answered_together_each_with_its_own_answer():
    recorder = Recorder()
    requests = [[i, i + 100] for i in range(30)]
    assert sent_together(MicroBatcher(recorder, len, max_tasks=1000), requests) == [[2 * a, 2 * b]
                                                                                     for a, b in requests]
    assert [len(batch) for batch in recorder.batches] == [30]


def test_a_failing_request_fails_alone():
    recorder = Recorder()
    answers = sent_together(MicroBatcher(recorder, len, max_tasks=1000), [[1], [2], [-1], [3]])
    assert answers[0] == [2] and answers[1] == [4] and answers[3] == [6]
    assert isinstance(answers[2], ValueError)
    # the batch of four failed, then each of its requests was answered on its own
    assert [len(batch) for batch in recorder.batches] == [4, 1, 1, 1, 1]


def test_a_batch_keeps_to_its_limit_of_tasks_and_a_larger_request_goes_alone():
    recorder = Recorder()
    requests = [[0], *([[1, 2, 3]] * 5), list(range(9)), [4]]
    answers = sent_together(MicroBatcher(recorder, len, max_tasks=7), requests)
    assert answers == [[2 * task for task in request] for request in requests]
    assert [sum(map(len, batch)) for batch in recorder.batches] == [7, 6, 3, 9, 1]


def test_a_request_alone_is_answered_at_once():
    recorder = Recorder()
    batcher = MicroBatcher(recorder, len, max_tasks=10)

    async def one_after_another():
        return [await batcher.answer([i]) for i in range(3)]

    assert asyncio.run(one_after_another()) == [[0], [2], [4]]
    assert recorder.batches == [[[0]], [[1]], [[2]]]


def test_requests_waiting_when_the_worker_stops_learn_it():
    async def main():
        batcher = MicroBatcher(Recorder(), len, max_tasks=10)
        waiting = [asyncio.create_task(batcher.answer([i])) for i in range(3)]
        await asyncio.sleep(0)     # all three wait; the runner has not begun
        batcher._running.cancel()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        return outcomes, await batcher.answer([7])   # and the batcher still answers afterwards

    outcomes, after = asyncio.run(main())
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
    assert after == [14]
