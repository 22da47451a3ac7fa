"""The LLM request's wire form (`bus/conversation.py`): the gateway reads an agent's request
parsing only the messages added since its previous one, and gets exactly what decoding the
whole document gives, including when the conversation was compacted, several agents are
interleaved, or the header is missing, wrong or forged."""

from __future__ import annotations

import pytest

from agentops.bus.connection import outgoing
from agentops.bus.conversation import CONVERSATION, ConversationDecoder, encode_llm_request
from agentops.protocol.messages import WORK_ADAPTER, LLMRequested
from tests.harness import Harness
from tests.unit.test_budget_and_context import AGENT, BIG, WRITES, priced_harness, tool_llm


def requests_of(h: Harness) -> list[LLMRequested]:
    h.run()
    assert len(h.llm_requests) > 3
    return list(h.llm_requests)


def wired(message: LLMRequested) -> tuple[bytes, dict[str, str]]:
    return encode_llm_request(message)


def test_a_run_decodes_to_the_same_requests_and_reuses_the_conversation() -> None:
    """Each request of a run decodes like a full decode, reusing the previous conversation."""
    h = Harness(llm=tool_llm(WRITES, cost=0.01))
    h.submit(AGENT, budget_usd=10.0)
    decoder = ConversationDecoder()
    requests = requests_of(h)
    for request in requests:
        data, headers = wired(request)
        assert decoder(data, headers) == WORK_ADAPTER.validate_json(data) == request
    # Every request after the first found the previous conversation as its prefix.
    previous = sum(len(r.request.messages) for r in requests[:-1])
    assert decoder.reused == previous


def test_interleaved_agents_and_a_compacted_conversation_decode_the_same() -> None:
    """With two agents alternating, one of them compacted, each request still decodes to itself."""
    # Compaction changes earlier messages of that conversation.
    reads = [{"tool": "read_file", "args": {"path": "big.txt"}} for _ in range(8)]
    h = priced_harness(tool_llm(reads, cost=0.0), context_window=40_000)
    task_id, _ = h.submit(AGENT, description="Summarise big.txt")
    h.tools.files[task_id] = {"big.txt": BIG}
    compacting = requests_of(h)
    assert compacting[-1].request.metadata["compacted_messages"] > 0
    other = Harness(llm=tool_llm(WRITES, cost=0.01))
    other.submit(AGENT, budget_usd=10.0)
    plain = requests_of(other)
    decoder = ConversationDecoder()
    for pair in zip(compacting, plain, strict=False):
        for request in pair:
            assert decoder(*wired(request)) == request


def test_an_evicted_agent_is_decoded_whole() -> None:
    """With room for one owner, alternating agents evict each other and each decodes whole."""
    h = Harness(llm=tool_llm(WRITES, cost=0.01))
    h.submit(AGENT, budget_usd=10.0)
    decoder = ConversationDecoder(owners=1)
    for request in requests_of(h):
        stranger = request.model_copy(update={"agent_id": "agent_stranger"})
        assert decoder(*wired(request)) == request
        assert decoder(*wired(stranger)) == stranger
    assert decoder.reused == 0


def test_the_header_is_only_a_hint() -> None:
    """A missing, malformed or misplaced conversation header makes the decoder decline (None)."""
    # Misplaced: one that does not delimit the messages array. On None the consumer decodes
    # the whole document.
    h = Harness(llm=tool_llm(WRITES, cost=0.01))
    h.submit(AGENT, budget_usd=10.0)
    request = requests_of(h)[-1]
    data, headers = wired(request)
    start, end = map(int, headers[CONVERSATION].split("-"))
    decoder = ConversationDecoder()
    for bad in (None, {}, {CONVERSATION: "x-y"}, {CONVERSATION: f"{end}-{start}"},
                {CONVERSATION: f"{start + 1}-{end}"}, {CONVERSATION: f"0-{len(data)}"},
                {CONVERSATION: f"{start}-{len(data) + 5}"}):  # fmt: skip
        assert decoder(data, bad) is None
    # A range over another array of the document (the tool schemas) is not a conversation.
    tools = data.index(b'"tools":[') + len(b'"tools":[')
    assert decoder(data, {CONVERSATION: f"{tools}-{data.index(b']', tools)}"}) is None


@pytest.mark.parametrize("edit", ["prefix_changed", "tail_invalid", "not_a_boundary"])
def test_a_conversation_that_changed_underneath_is_never_spliced(edit: str) -> None:
    """A cached prefix is reused only when its bytes match and end on a message boundary."""
    # Otherwise the messages are decoded anew, or the decoder declines.
    h = Harness(llm=tool_llm(WRITES, cost=0.01))
    h.submit(AGENT, budget_usd=10.0)
    first, second = requests_of(h)[1:3]
    decoder = ConversationDecoder()
    assert decoder(*wired(first)) == first
    seen = span(wired(first)[1])[1] - span(wired(first)[1])[0]
    data, headers = wired(second)
    start, end = span(headers)
    content = data[start:end]
    if edit == "prefix_changed":  # same length, other bytes: another conversation
        content = content.replace(b"Task: ", b"Tusk: ", 1)
    elif edit == "tail_invalid":
        at = content.rindex(b'"role":"') + len(b'"role":"')
        content = content[:at] + b"wizard" + content[content.index(b'"', at) :]
    else:  # the previous conversation's bytes, then a space before the comma: valid JSON
        content = content[:seen] + b" " + content[seen:]
    forged = data[:start] + content + data[end:]
    header = {CONVERSATION: f"{start}-{start + len(content)}"}
    before = decoder.reused
    decoded = decoder(forged, header)
    assert decoder.reused == before
    if edit == "tail_invalid":
        assert decoded is None
        with pytest.raises(ValueError):
            WORK_ADAPTER.validate_json(forged)
    else:
        assert decoded == WORK_ADAPTER.validate_json(forged)
        assert (decoded == second) is (edit == "not_a_boundary")


def span(headers: dict[str, str]) -> tuple[int, int]:
    first, second = headers[CONVERSATION].split("-")
    return int(first), int(second)


def test_published_llm_requests_carry_the_header() -> None:
    """A published LLM request carries its Nats-Msg-Id and a conversation header that decodes it."""
    h = Harness(llm=tool_llm(WRITES, cost=0.01))
    h.submit(AGENT, budget_usd=10.0)
    request = requests_of(h)[-1]
    ((_subject, data, headers),) = outgoing([("agentops.llm.request", request, request.id)])
    assert headers["Nats-Msg-Id"] == request.id
    assert ConversationDecoder()(data, dict(headers)) == request
