"""protocol: openai: choices as items, streamed or not, read the same way."""

from __future__ import annotations

import json

import pytest

from router.core.compare import Answer, compare
from router.core.compare_kinds import FieldSpec
from router.core.jsonpath import MISSING
from router.core.protocols import get
from router.core.protocols.openai import completion, event_data

OPENAI = get("openai")


def sse(*events: object, done: bool = True) -> bytes:
    """An OpenAI-style event stream of the given chunks."""
    out = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return out + (b"data: [DONE]\n\n" if done else b"")


def chunk(index: int = 0, finish: str | None = None, **delta: object) -> dict[str, object]:
    choice = {"index": index, "delta": delta, "finish_reason": finish}
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}


def streamed(*texts: str, finish: str = "stop") -> bytes:
    chunks = [chunk(role="assistant", content="")]
    chunks += [chunk(content=t) for t in texts]
    chunks.append(chunk(finish=finish))
    usage = {"prompt_tokens": 7, "completion_tokens": len(texts), "total_tokens": 7 + len(texts)}
    return sse(*chunks, {"id": "c1", "choices": [], "usage": usage})


def whole(text: str | None, finish: str = "stop", **message: object) -> bytes:
    msg = {"role": "assistant", "content": text, **message}
    usage = {"prompt_tokens": 7, "completion_tokens": 2}
    doc = {"id": "c1", "choices": [{"index": 0, "message": msg, "finish_reason": finish}]}
    return json.dumps({**doc, "usage": usage}).encode()


def test_a_stream_and_a_json_answer_read_as_the_same_items() -> None:
    """The concatenated deltas are the text; finish reason and usage as the JSON answer has."""
    names = ["text", "finish_reason", "tool_calls", "completion_tokens"]
    s = OPENAI.answer_items(streamed("Hel", "lo"), names).columns
    j = OPENAI.answer_items(whole("Hello"), names).columns
    assert s["text"] == j["text"] == ["Hello"]
    assert s["finish_reason"] == j["finish_reason"] == ["stop"]
    assert s["tool_calls"] == j["tool_calls"] == [[]]
    assert s["completion_tokens"] == j["completion_tokens"] == [2]


def test_json_paths_read_the_completion_a_stream_adds_up_to() -> None:
    names = ["$.choices[0].message.content", "$.usage.completion_tokens", "$.model"]
    items = OPENAI.answer_items(streamed("a", "b", "c"), names)
    assert items.columns == {names[0]: ["abc"], names[1]: [3], names[2]: ["m"]}


def test_each_choice_is_an_item_in_index_order() -> None:
    """n=2: events of both choices interleave; each choice keeps its own text."""
    body = sse(
        chunk(1, content="B1"), chunk(0, content="A1"), chunk(1, content="B2"),
        chunk(0, "stop", content="A2"), chunk(1, "length"),
    )  # fmt: skip
    cols = OPENAI.answer_items(body, ["text", "finish_reason"]).columns
    assert cols == {"text": ["A1A2", "B1B2"], "finish_reason": ["stop", "length"]}


def test_tool_call_names_from_stream_deltas_and_from_messages() -> None:
    call = {"index": 0, "id": "t", "type": "function", "function": {"name": "get_weather"}}
    args = {"index": 0, "function": {"arguments": '{"city": "Oslo"}'}}
    body = sse(
        chunk(tool_calls=[call]), chunk(tool_calls=[args]),
        chunk(tool_calls=[{"index": 1, "function": {"name": "get_time", "arguments": "{}"}}]),
        chunk(finish="tool_calls"),
    )  # fmt: skip
    assert OPENAI.answer_items(body, ["tool_calls"]).columns == {
        "tool_calls": [["get_weather", "get_time"]]
    }
    calls = [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    items = OPENAI.answer_items(whole(None, "tool_calls", tool_calls=calls), None)
    assert items.columns["tool_calls"] == [["f"]]
    assert items.columns["text"] == [""]  # content null: the empty text
    doc, _ = completion(body)
    assert doc["choices"][0]["message"]["tool_calls"][0]["function"] == {  # type: ignore[index]
        "name": "get_weather",
        "arguments": '{"city": "Oslo"}',
    }


def test_completions_api_streamed_and_not() -> None:
    events = [{"choices": [{"index": 0, "text": t, "finish_reason": None}]} for t in ("on", "ce")]
    events.append({"choices": [{"index": 0, "text": "", "finish_reason": "length"}]})
    body = json.dumps({"choices": [{"index": 0, "text": "once", "finish_reason": "length"}]})
    for answer in (sse(*events), body.encode()):
        cols = OPENAI.answer_items(answer, ["text", "finish_reason"]).columns
        assert cols == {"text": ["once"], "finish_reason": ["length"]}


def test_sse_framing_details() -> None:
    """CRLF lines, comments, event/id fields, data without a space, multi-line data."""
    body = (
        b": keep-alive\r\n\r\nevent: message\r\nid: 1\r\n"
        b'data:{"choices":[{"index":0,"delta":{"content":"x"}}]}\r\n\r\n'
        b'data: {"choices":[{"index":0,\ndata: "delta":{"content":"y"}}]}\n\ndata: [DONE]\n\n'
    )
    assert event_data(body)[1] == b'{"choices":[{"index":0,\n"delta":{"content":"y"}}]}'
    assert OPENAI.answer_items(body, ["text"]).columns == {"text": ["xy"]}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (sse(chunk(content="a"), {"error": {"message": "overloaded"}}), "stream error"),
        (b"data: {broken\n\n", "stream event 1 is not JSON"),
        (b"<html>bad gateway</html>", "not JSON"),
    ],
)
def test_broken_answers_are_problems_with_no_items(body: bytes, problem: str) -> None:
    items = OPENAI.answer_items(body, ["text"])
    assert items.problem.startswith(problem)
    assert items.count == 0


def test_an_error_answer_has_no_items() -> None:
    items = OPENAI.answer_items(b'{"error": {"message": "no such model"}}', ["text"])
    assert (items.problem, items.count) == ("", 0)


def test_request_item() -> None:
    chat = {
        "model": "llama-3-8b",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "last"}]},
        ],
        "max_completion_tokens": 64,
        "stream": True,
    }
    names = ["model", "prompt", "messages", "max_tokens", "temperature", "stream"]
    row = OPENAI.request_items(json.dumps(chat).encode(), names).rows(names)
    assert row == [("llama-3-8b", "last", 4, 64, MISSING, True)]
    legacy = OPENAI.request_items(b'{"prompt": ["p1"], "temperature": 0.2}', names).rows(names)
    assert legacy == [(MISSING, "p1", MISSING, MISSING, 0.2, False)]


def test_only_completion_posts_are_judged() -> None:
    assert OPENAI.inference(b"POST", b"/v1/chat/completions")
    assert OPENAI.inference(b"POST", b"/llm/v1/completions?x=1")
    assert not OPENAI.inference(b"GET", b"/v1/models")
    assert not OPENAI.inference(b"POST", b"/v1/embeddings")


def test_names_are_checked() -> None:
    assert OPENAI.check("text") == ""
    assert OPENAI.check("$.choices[0].message.content") == ""
    assert "knows text" in OPENAI.check("answer")
    assert "every choice" in OPENAI.advice("$.choices[0].message.content", "output")


def test_identical_streams_agree_whatever_their_chunking() -> None:
    """The same text split into other deltas is the same answer."""
    fields = [FieldSpec("text", "label"), FieldSpec("finish_reason", "label")]
    a = Answer(200, streamed("Hello", " world"), 0.1)
    b = Answer(200, streamed("Hel", "lo wor", "ld"), 0.2)
    c = compare(fields, a, b, protocol=OPENAI)
    assert c.agree
    assert c.items == (True,)
    whole_answers = compare([], a, b, protocol=OPENAI)  # per choice; token counts left out
    assert whole_answers.agree, whole_answers.paths
    other = compare([], a, Answer(200, streamed("Bye"), 0.1), protocol=OPENAI)
    assert other.paths == ("$.text",)
