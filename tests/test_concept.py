"""Concept drift: the accuracy CUSUM of router/core/concept.py on simulated labels (pure)."""

from __future__ import annotations

import random

from router.core.concept import REFERENCE, RUN_LENGTH, ArmWatch


def labels(rng: random.Random, accuracy: float, n: int) -> list[bool]:
    return [rng.random() < accuracy for _ in range(n)]


def first_alarm(watch: ArmWatch, stream: list[bool]) -> int | None:
    """Index of the label that raised the alarm, fed one at a time."""
    for i, right in enumerate(stream):
        if watch.feed(1, int(right)) == "alarm":
            return i
    return None


def test_a_drop_from_90_to_60_percent_alarms_within_300_labels() -> None:
    """0.9 -> 0.6 after the reference and 2,000 more labels: every one of 200 runs
    alarms within 300 labels of the change, none before it."""
    delays = []
    for seed in range(200):
        rng = random.Random(seed)
        before = labels(rng, 0.9, REFERENCE + 2000)
        at = first_alarm(ArmWatch(), before + labels(rng, 0.6, 1000))
        assert at is not None, seed
        delays.append(at - len(before))
    print(f"0.9 -> 0.6: alarm after {min(delays)}..{max(delays)} labels (200 runs)")
    assert min(delays) >= 0
    assert max(delays) <= 300


def test_no_alarm_over_10000_labels_at_constant_accuracy() -> None:
    """Accuracy that holds (0.5 .. 0.99): no alarm in 10,000 labels after the reference,
    20 runs each (the stated rate is one per RUN_LENGTH labels at most, on average)."""
    for accuracy in (0.5, 0.7, 0.9, 0.99):
        for seed in range(20):
            rng = random.Random(1000 + seed)
            stream = labels(rng, accuracy, REFERENCE + 10_000)
            assert first_alarm(ArmWatch(), stream) is None, (accuracy, seed)
    assert RUN_LENGTH >= 10_000


def test_batches_as_the_replicas_count_them_alarm_too_and_clear() -> None:
    """Fed per minute (a batch at a time) the drop still alarms; back at 0.9 it clears."""
    rng = random.Random(7)
    watch = ArmWatch()
    events = []
    for accuracy, batches in ((0.9, 20), (0.6, 6), (0.95, 40)):
        for _ in range(batches):
            batch = labels(rng, accuracy, 50)
            events.append(watch.feed(len(batch), sum(batch)))
    assert events.count("alarm") == 1
    assert events.index("alarm") <= 20 + 6
    assert events.count("cleared") == 1


def test_a_state_survives_the_store() -> None:
    """to_dict / from_dict: a new leader goes on with the same statistic."""
    watch = ArmWatch()
    watch.feed(REFERENCE, REFERENCE * 9 // 10)
    watch.feed(40, 20)
    again = ArmWatch.from_dict(watch.to_dict())
    assert again == watch
    assert again.figures()["reference_n"] == REFERENCE


def test_routerctl_feedback_says_an_arm_is_still_collecting_its_reference() -> None:
    """With 462 of REFERENCE labels, `routerctl feedback` read 'reference 30.1% of 462
    labels', as if the test were holding the arm to it: it is not yet."""
    from router.ops.cli_views import feedback_lines

    collecting, held = ArmWatch(), ArmWatch()
    collecting.feed(462, 139)
    held.feed(REFERENCE + 10, 450)
    body = {"route": "r", "accuracy_test": {"a": collecting.figures(), "b": held.figures()}}
    lines = [line for line in feedback_lines(body) if line.startswith("accuracy test")]
    assert lines[0] == (
        f"accuracy test a: collecting its reference, 462 of {REFERENCE} labels (30.1% so far)"
    )
    assert lines[1].startswith("accuracy test b: ok  reference ")
