"""What the slixmpp scripts of the tests share: logging in and waiting for what a client saw.

`Steps` is mixed into a script's `slixmpp.ClientXMPP` subclass. The script calls
`self.watch_steps()` in its `__init__`; its event handlers record what they see and set
`self.changed`; `until` waits, with a deadline, for what was recorded to satisfy a predicate.
It runs under Debian's slixmpp 1.8 and the current release from PyPI.
"""

import asyncio
import inspect

STEP_TIMEOUT = 10.0


class Steps:
    def watch_steps(self):
        self.changed = asyncio.Event()
        self.started = None
        self.add_event_handler('session_start', self._started)

    def _started(self, _event):
        if self.started and not self.started.done():
            self.started.set_result(None)

    async def login(self, port):
        """Connects to 127.0.0.1:`port` and waits for the session to start."""
        self.started = asyncio.get_running_loop().create_future()
        if 'address' in inspect.signature(self.connect).parameters:
            self.connect(('127.0.0.1', port))  # slixmpp 1.8
        else:
            self.connect('127.0.0.1', port)
        await asyncio.wait_for(self.started, STEP_TIMEOUT)

    async def until(self, what, predicate):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP_TIMEOUT
        while not predicate():
            if loop.time() > deadline:
                raise RuntimeError(f'timed out waiting for {what}')
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                pass
