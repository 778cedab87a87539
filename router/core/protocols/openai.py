"""`protocol: openai`: OpenAI-compatible LLM servers (vLLM, TGI, Ollama, LiteLLM).

    POST .../v1/chat/completions   {"model", "messages": [...], "stream": bool}
    POST .../v1/completions        {"model", "prompt": "...", "stream": bool}

An answer's items are its choices (`n` of them, by `index`). Streamed or not,
each choice reads as the same columns:

    text               the choice's text: message.content (chat), text
                       (completions), or the concatenated delta.content (or
                       text) of every event of a stream
    finish_reason      stop, length, tool_calls, ... (null if never sent)
    tool_calls         the names of the functions the choice calls, in order
    completion_tokens  usage of the answer, when the server reports it (the
    prompt_tokens      same value on every choice of the answer)

With no compared names (a whole-answer comparison) an item is its text,
finish reason and tool calls: token counts are left out, as two tokenizers
count the same text differently.

A streamed answer (Server-Sent Events: `data: {json}` events, `data: [DONE]`
last) is read as the completion it adds up to, so a `$` path reads the same
document whether the client asked for a stream or not: `$.choices[0].message.content`,
`$.usage.completion_tokens`. An `error` event, or an event that is not JSON,
makes the answer a problem (no items: a shadow's disagreement is "missing").

A request is one item: `model`, `prompt` (the last user message of a chat,
the prompt of a completion), `messages` (how many), `max_tokens` (or
`max_completion_tokens`), `temperature`, `stream`. Only POSTs to a
`/completions` path are judged; `/v1/models` and the rest pass through.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from router.core.jsonpath import MISSING
from router.core.protocols.base import NOT_JSON, Items, inflate, loads, path_check, path_column

_CALL: Final = re.compile(rb"/(?:chat/)?completions(?:\?.*)?$")
ANSWER_NAMES: Final = ("text", "finish_reason", "tool_calls", "completion_tokens", "prompt_tokens")
WHOLE_NAMES: Final = ANSWER_NAMES[:3]  # what "the whole answer" compares
REQUEST_NAMES: Final = ("model", "prompt", "messages", "max_tokens", "temperature", "stream")
DONE: Final = b"[DONE]"


class OpenAI:
    word = "openai"

    def inference(self, method: bytes, target: bytes) -> bool:
        return method == b"POST" and _CALL.search(target) is not None

    def check(self, name: str) -> str:
        if name.startswith("$"):
            return path_check(name)
        if name in ANSWER_NAMES or name in REQUEST_NAMES:
            return ""
        known = ", ".join((*ANSWER_NAMES, *REQUEST_NAMES))
        return f"protocol openai knows {known} (or a JSON path)"

    def advice(self, name: str, role: str) -> str:
        if name.startswith("$.choices[") and role == "output":
            return (
                f"{name} reads one choice per request; `output: text` (finish_reason, "
                "tool_calls) reads every choice, streamed or not"
            )
        return ""

    def request_items(self, body: bytes, names: Sequence[str]) -> Items:
        body = inflate(body)
        doc = loads(body)
        if doc is MISSING:
            return Items({}, NOT_JSON if body else "")
        row = request_row(doc)
        return Items({n: path_column(doc, n) if n.startswith("$") else [row[n]] for n in names})

    def answer_items(self, body: bytes, names: Sequence[str] | None) -> Items:
        body = inflate(body)
        doc, problem = completion(body)
        if problem:
            return Items({}, problem)
        table = columns(doc)
        if names is None:  # the answer itself: token counts differ between tokenizers
            return Items({n: table[n] for n in WHOLE_NAMES} if table else {})
        return Items(
            {n: path_column(doc, n) if n.startswith("$") else table.get(n, []) for n in names}
        )


def request_row(doc: object) -> dict[str, object]:
    """The request's one item (see the module docstring)."""
    d: Mapping[str, Any] = doc if isinstance(doc, dict) else {}
    messages = d.get("messages")
    listed = messages if isinstance(messages, list) else []
    prompt = d.get("prompt", MISSING)
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else MISSING
    if listed:
        users = [m for m in listed if isinstance(m, dict) and m.get("role") == "user"]
        prompt = content_text(users[-1].get("content")) if users else MISSING
    return {
        "model": d.get("model", MISSING),
        "prompt": prompt,
        "messages": len(listed) if isinstance(messages, list) else MISSING,
        "max_tokens": d.get("max_tokens", d.get("max_completion_tokens", MISSING)),
        "temperature": d.get("temperature", MISSING),
        "stream": bool(d.get("stream", False)),
    }


def content_text(content: object) -> str:
    """A message's content as text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


# -- answers ---------------------------------------------------------------------


def is_stream(body: bytes) -> bool:
    """An event stream starts with a field (`data:`, `event:`, `id:`) or a comment."""
    head = body[:16].lstrip()
    return head.startswith((b"data:", b":", b"event:", b"id:", b"retry:"))


def completion(body: bytes) -> tuple[object, str]:
    """(the completion document, problem): a JSON answer as it is, a stream as the
    completion its events add up to."""
    if not is_stream(body):
        doc = loads(body)
        return (doc, "") if doc is not MISSING else (MISSING, NOT_JSON)
    chunks, problem = stream_chunks(body)
    if problem:
        return MISSING, problem
    return assemble(chunks)


def event_data(body: bytes) -> list[bytes]:
    """The data of every event of a stream, `[DONE]` left out. Lines of one event's
    data are joined by newlines, as the SSE spec says."""
    out: list[bytes] = []
    data: list[bytes] = []
    for line in body.replace(b"\r\n", b"\n").split(b"\n"):
        if not line:
            if data:
                out.append(b"\n".join(data))
                data = []
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        out.append(b"\n".join(data))
    return [d for d in out if d.strip() != DONE]


def stream_chunks(body: bytes) -> tuple[list[object], str]:
    """Every event decoded (one json.loads for the whole stream: the events joined
    into one array cost about a third of one call per event); the problem in words."""
    payloads = event_data(body)
    try:
        return json.loads(b"[" + b",".join(payloads) + b"]"), ""
    except (ValueError, RecursionError):
        pass
    for i, payload in enumerate(payloads):  # which one: for the reason
        if loads(payload) is MISSING:
            return [], f"stream event {i + 1} is not JSON"
    return [], "stream is not JSON"


class _Choice:
    __slots__ = ("args", "finish", "names", "parts")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish: object = None
        self.names: dict[int, str] = {}  # tool call index -> function name
        self.args: dict[int, list[str]] = {}


def assemble(chunks: Sequence[object]) -> tuple[object, str]:
    """The chat.completion (or text_completion) a stream's chunks add up to."""
    choices: dict[int, _Choice] = {}
    head: dict[str, Any] = {}
    usage: object = None
    chat = True
    for chunk in chunks:
        if not isinstance(chunk, dict):
            return MISSING, "stream event is not an object"
        if "error" in chunk:
            return MISSING, f"stream error: {str(chunk['error'])[:200]}"
        head = head or {k: chunk[k] for k in ("id", "model", "created") if k in chunk}
        usage = chunk.get("usage") or usage
        for c in chunk.get("choices") or ():
            if isinstance(c, dict):
                chat = _add_choice(choices, c) and chat
    return _document(head, choices, usage, chat), ""


def _add_choice(choices: dict[int, _Choice], c: Mapping[str, Any]) -> bool:
    """Fold one event's choice in; False for a completions (not chat) event."""
    index = c.get("index", 0)
    choice = choices.setdefault(index if isinstance(index, int) else 0, _Choice())
    if c.get("finish_reason") is not None:
        choice.finish = c["finish_reason"]
    delta = c.get("delta")
    if not isinstance(delta, dict):
        text = c.get("text")
        if isinstance(text, str):
            choice.parts.append(text)
        return False
    if isinstance(delta.get("content"), str):
        choice.parts.append(delta["content"])
    for j, call in enumerate(delta.get("tool_calls") or ()):
        if isinstance(call, dict):
            k = call.get("index", j)
            fn = call.get("function") or {}
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                choice.names[k] = fn["name"]
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                choice.args.setdefault(k, []).append(fn["arguments"])
    return True


def _document(
    head: Mapping[str, Any], choices: Mapping[int, _Choice], usage: object, chat: bool
) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for i in sorted(choices):
        c = choices[i]
        text = "".join(c.parts)
        if not chat:
            out.append({"index": i, "text": text, "finish_reason": c.finish})
            continue
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if c.names or c.args:
            message["tool_calls"] = [
                {
                    "type": "function",
                    "function": {
                        "name": c.names.get(k, ""),
                        "arguments": "".join(c.args.get(k, [])),
                    },
                }
                for k in sorted(c.names.keys() | c.args.keys())
            ]
        out.append({"index": i, "message": message, "finish_reason": c.finish})
    doc: dict[str, Any] = {**head, "object": "chat.completion" if chat else "text_completion"}
    doc["choices"] = out
    if usage is not None:
        doc["usage"] = usage
    return doc


def columns(doc: object) -> dict[str, list[object]]:
    """name -> one value per choice, in `index` order (see the module docstring)."""
    found = doc.get("choices") if isinstance(doc, dict) else None
    if not isinstance(found, list):
        return {}  # an error answer has no items
    listed = [c for c in found if isinstance(c, dict)]
    listed.sort(key=lambda c: c.get("index", 0) if isinstance(c.get("index", 0), int) else 0)
    usage = doc.get("usage") if isinstance(doc, dict) else None
    used: Mapping[str, Any] = usage if isinstance(usage, dict) else {}
    table: dict[str, list[object]] = {name: [] for name in ANSWER_NAMES}
    for c in listed:
        message = c.get("message")
        m: Mapping[str, Any] = message if isinstance(message, dict) else {}
        table["text"].append(content_text(m.get("content")) if m else _str(c.get("text")))
        table["finish_reason"].append(c.get("finish_reason"))
        table["tool_calls"].append(tool_names(m))
        table["completion_tokens"].append(used.get("completion_tokens", MISSING))
        table["prompt_tokens"].append(used.get("prompt_tokens", MISSING))
    return table


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def tool_names(message: Mapping[str, Any]) -> list[object]:
    """The function names a message calls (tool_calls, or the older function_call)."""
    calls = message.get("tool_calls")
    names: list[object] = []
    for call in calls if isinstance(calls, list) else ():
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            names.append(fn.get("name", ""))
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and not names:
        names.append(legacy.get("name", ""))
    return names


OPENAI: Final = OpenAI()
