"""Answers to acknowledged PUBLISHes, in each session's request order.

On a distributed backend an acknowledged PUBLISH is answered only once the cluster has
taken the event (protocol_spec/cluster.md, "Acknowledged publishes"); answers that are
ready earlier wait behind it so a client sees PUBLISHED/ERROR in request order.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocol_spec.messages import Message

    from .session import Session

__all__ = ["Acknowledgements", "Answer"]


class Answer:
    """One acknowledged PUBLISH's answer: None until the cluster has decided."""

    __slots__ = ("message",)

    def __init__(self, message: Message | None = None) -> None:
        self.message = message


class Acknowledgements:
    """Answers to acknowledged PUBLISHes, sent to each session in the order it published.

    An answer the cluster still holds keeps later answers of the same session waiting
    behind it (a refusal sent at once included), so a client sees PUBLISHED/ERROR in
    request order. A session that left is forgotten: its late answers go nowhere.
    """

    __slots__ = ("_queues",)

    def __init__(self) -> None:
        self._queues: dict[int, deque[Answer]] = {}

    def expect(self, session: Session) -> Answer:
        """Reserve the next answer for ``session`` (to ``resolve`` later)."""
        answer = Answer()
        self._queues.setdefault(session.id, deque()).append(answer)
        return answer

    def send(self, session: Session, message: Message) -> None:
        """Answer now, or behind the session's answers still held."""
        queue = self._queues.get(session.id)
        if queue:
            queue.append(Answer(message))
        else:
            session.peer.send(message)

    def resolve(self, session: Session, answer: Answer, message: Message) -> None:
        """Give ``answer`` its message; send every answer of the session now ready."""
        if answer.message is not None:
            return  # answered already
        answer.message = message
        queue = self._queues.get(session.id)
        if queue is None:
            return  # the session left
        while queue:
            ready = queue[0].message
            if ready is None:
                break
            queue.popleft()
            session.peer.send(ready)
        if not queue:
            del self._queues[session.id]

    def forget(self, session: Session) -> None:
        """The session left: drop its answers still held."""
        self._queues.pop(session.id, None)

    def held(self, session: Session) -> int:
        """How many answers of ``session`` are held (none once all were sent)."""
        return len(self._queues.get(session.id, ()))
