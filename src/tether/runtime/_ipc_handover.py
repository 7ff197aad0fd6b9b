"""How an IPC caller that read its own reply leaves the reader role: at once, or at the batch's end.

A caller waiting for its reply reads the session's stream itself (the reading
baton, `_ipc_engine`). When its reply comes it returns, and the reader role is
vacant: someone must take it, because the other side may send a notification
or an invoke at any time. Waking a spare worker for it costs a task step per
invoke, about a tenth of a same-loop invoke, and in a loop of invokes the
spare always finds the role taken back by the caller's next invoke.

So a session whose caller keeps coming back for the role before the woken
worker runs (`LAZY_STREAK` times in a row) turns lazy: it leaves the role to
the caller, and a Trio instrument (`BatchEnd`) looks once the scheduler batch
has run, before the loop checks for I/O. If the caller did not come back
within its step, the role is still vacant: a worker is woken then, for the
next batch, as the spare would have run, and the session stops being lazy.
Nothing waits longer to be read than before.

The instrument is in the run only while some session is lazy, and costs two
attribute reads per lazy session per batch, plus Trio's call of the hook. It
pays when an invoke takes few batches (2 in-process or over a local socket);
a session that counts more than `MAX_LAZY_BATCHES` per invoke (WebSocket: 4,
two of them the connection's reader tasks) goes back to waking spares.
"""

from __future__ import annotations

import abc

import trio

__all__ = ["LAZY_STREAK", "MAX_LAZY_BATCHES", "BatchEnd", "Handover"]

#: Invokes in a row that came back for the role before the woken worker ran,
#: after which a session turns lazy.
LAZY_STREAK = 4
#: A lazy session that averages more scheduler batches per invoke than this
#: stops being lazy: the instrument's call in each batch would cost more than
#: the task step it saves.
MAX_LAZY_BATCHES = 3
#: How many invokes a lazy session counts before it compares.
_SAMPLE = 256
#: After a comparison that ended laziness, invokes before it may try again.
_BACK_OFF = 16_384


class Handover(abc.ABC):
    """The leaving of the reader role by callers; a part of `Peer`."""

    # Set by Peer.
    vacant: bool
    reading_over: bool

    @abc.abstractmethod
    def _wake_reader(self) -> None: ...

    def init_handover(self) -> None:
        #: A caller that read its reply left the role vacant and may come
        #: back for it (while lazy, nobody was woken for it).
        self.left_role = False
        #: Invokes in a row that found the role as their caller left it.
        self.streak = 0
        #: The role is left to the caller until the batch ends (`BatchEnd`).
        self.lazy = False
        #: While lazy: scheduler batches seen, invokes counted; after laziness
        #: did not pay, invokes to go before it may start again.
        self.batches = 0
        self.lazy_invokes = 0
        self.back_off = 0

    def took_reading(self) -> None:
        """A caller takes the vacant role for its reply, as a caller left it (`left_role`).

        It is back before the worker woken for the role ran (or, lazy, before
        the batch ended).
        """
        self.left_role = False
        if self.lazy:
            self.lazy_invokes += 1
            if self.lazy_invokes == _SAMPLE:
                if self.batches > MAX_LAZY_BATCHES * _SAMPLE:
                    self.lazy = False  # `BatchEnd` drops it after this batch
                    self.streak = 0
                    self.back_off = _BACK_OFF
                self.batches = self.lazy_invokes = 0
            return
        if self.back_off:
            self.back_off -= 1
            return
        self.streak += 1
        if self.streak >= LAZY_STREAK:
            self.lazy = True
            self.batches = self.lazy_invokes = 0
            BatchEnd.watch(self)

    def waited(self) -> None:
        """A caller found the role taken (or could not take it): no streak."""
        self.streak = 0

    def leave_reading(self, alone: bool) -> None:
        """A caller that has its reply leaves the vacant reader role.

        Args:
            alone: No other caller waits, and no handed invoke: nobody but
                a worker would be woken.
        """
        if alone and not self.reading_over:
            self.left_role = True
            if self.lazy:
                return  # `after_batch` looks once the batch has run
        self._wake_reader()

    def after_batch(self) -> bool:
        """For a lazy session, once a batch has run: wake a worker if the role is still left.

        Returns:
            False when the session stops being lazy (its caller did not come
            back, laziness did not pay, or the session ended).
        """
        if self.left_role:
            self.left_role = False
            if self.vacant:
                # The caller went elsewhere: someone must read.
                self.lazy = False
                self.streak = 0
                self._wake_reader()
                return False
        return self.lazy and not self.reading_over


class BatchEnd(trio.abc.Instrument):
    """Looks at the run's lazy sessions once each scheduler batch has run."""

    __slots__ = ("sessions", "token")

    def __init__(self) -> None:
        self.sessions: list[Handover] = []
        self.token = trio.lowlevel.current_trio_token()

    @staticmethod
    def watch(session: Handover) -> None:
        """Look at `session` after every batch of this run until it stops being lazy."""
        try:
            batch_end = _BATCH_END.get()
        except LookupError:
            batch_end = BatchEnd()
            _BATCH_END.set(batch_end)
        if session in batch_end.sessions:
            return  # stopped being lazy and started again within one batch
        batch_end.sessions.append(session)
        if len(batch_end.sessions) == 1:
            trio.lowlevel.add_instrument(batch_end)

    def before_io_wait(self, timeout: float) -> None:
        # Trio calls this between any two batches, also when tasks are ready
        # (a timeout of 0). The usual case: every caller came back in its step.
        for session in self.sessions:
            session.batches += 1
            if session.left_role or not session.lazy or session.reading_over:
                self._settle(timeout)
                return

    def _settle(self, timeout: float) -> None:
        kept = [session for session in self.sessions if session.after_batch()]
        # A session dropped has woken a worker, or has stopped being lazy
        # (then the wake-up below is one look too many, once).
        woke = len(kept) < len(self.sessions)
        self.sessions = kept
        if not kept:
            trio.lowlevel.remove_instrument(self)
        if woke and timeout > 0:
            # A worker is ready to run now, but the loop had decided to sleep
            # until I/O or a deadline: make it look again at once.
            self.token.run_sync_soon(_nothing)


def _nothing() -> None:
    pass


_BATCH_END: trio.lowlevel.RunVar[BatchEnd] = trio.lowlevel.RunVar("tether_ipc_batch_end")
